#!/usr/bin/env bash
# make bench-boot: a lab node (QEMU under TCG, OVMF, UEFI HTTP boot over IPv6) from QEMU start
# to its installer running, and to `ready`, RUNS times (default 3) with a blank disk each time;
# prints the median time at which each phase was reached and the median of each step between
# phases, so the slow step shows. `metal6 lab up` does the run: a private namespace with a real
# `metal6 serve`, the node's events and its serial console (kernel starts) timestamped as they
# appear. Targets (#16): installer running <= 20 s, ready <= 100 s.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
NODE=${NODE:-lab-node-1}
cargo build -q --locked -p metal6-cli
cargo build -q --locked --profile installer -p metal6-installer
M6="$PWD/target/debug/metal6"
WORK=$(mktemp -d /var/tmp/metal6-bench-boot.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "bench-boot: the lab image and installer UKI (cached by content)"
"$M6" image build images/lab.yaml --out artifacts --installer target/installer/metal6-installer >"$WORK/image.log" 2>&1 \
  || { tail -20 "$WORK/image.log"; exit 1; }

for i in $(seq "$RUNS"); do
  echo "bench-boot: run $i of $RUNS: $NODE, blank disk"
  if ! "$M6" lab up --node "$NODE" --artifacts artifacts --workdir "$WORK/run$i" >"$WORK/run$i.log" 2>&1; then
    echo "bench-boot: run $i did not reach ready:" >&2
    tail -25 "$WORK/run$i.log" >&2
    exit 1
  fi
  grep -E "^$NODE ready in" "$WORK/run$i.log"
done

python3 - "$WORK" "$RUNS" <<'EOF'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
summaries = [json.load(open(f"{work}/run{i}/summary.json")) for i in range(1, runs + 1)]
at = {}
for s in summaries:
    for name, t in s["phases"]:
        at.setdefault(name, []).append(t)
# Phases every run reached, in the order reached (by median).
phases = sorted((p for p, ts in at.items() if len(ts) == runs), key=lambda p: statistics.median(at[p]))
med = {p: statistics.median(at[p]) for p in phases}
print(f"\n{'phase reached (s after QEMU start)':<44} {'median':>8}   runs")
for p in phases:
    print(f"  {p:<42} {med[p]:8.1f}   {' '.join(f'{t:.1f}' for t in at[p])}")
steps = {
    ("start", "firmware-dhcp"): "firmware start to its DHCPv6 lease",
    ("firmware-dhcp", "netboot"): "firmware: lease to the UKI request",
    ("netboot", "installer-kernel"): "UKI download, firmware hands over",
    ("installer-kernel", "installer-initramfs"): "installer kernel to its initramfs",
    ("installer-initramfs", "installer"): "drivers, the installer's DHCPv6 lease",
    ("installer", "writing-image"): "plan fetched, disk chosen",
    ("writing-image", "image-written"): "image written and verified",
    ("image-written", "installed"): "installed root configured",
    ("installed", "node-kernel"): "reboot, firmware, disk boot to kernel",
    ("node-kernel", "ready"): "installed system to ready",
}
print(f"\n{'step (median of per-run differences)':<44} {'seconds':>8}")
for (a, b), label in steps.items():
    if (a != "start" and a not in med) or b not in med:
        continue
    d = [s2 - s1 for s1, s2 in zip(at[a] if a != "start" else [0.0] * runs, at[b])]
    print(f"  {label:<42} {statistics.median(d):8.1f}")
inst, ready = med.get("installer"), med.get("ready")
print()
print(f"{'QEMU start -> installer running (median)':<44} {inst:8.1f}   target <= 20 s" if inst is not None
      else "installer running: not reached in every run")
print(f"{'QEMU start -> ready (median)':<44} {ready:8.1f}   target <= 100 s" if ready is not None
      else "ready: not reached in every run")
EOF
