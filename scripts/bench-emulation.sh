#!/usr/bin/env bash
# make bench-emulation: metal6 emulate run --backend netns at 2,000 satellites x 5 interfaces
# (40 x 50 at 550 km, 53°: 10,000 interfaces), then 4,000 x 5 (80 x 50) on one worker and the
# same 4,000 over two emulated workers (--nodes: a namespace each on a shared fabric, the ISLs
# between them VXLAN). Prints create, one full link-state update, teardown and memory for each;
# with workers also the crossing ISLs per border and the update of one worker's share (what
# each worker's link agent does while the others do theirs). Targets (issue #9) at 2,000:
# create <= 20 s (a shell-script baseline took 42 s here), update <= 0.5 s, teardown <= 2 s;
# (issue #21) over two workers: creation no slower per satellite than one worker, a worker's
# update <= 0.5 s.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
cargo build -q --release --locked -p metal6-cli
M6="$PWD/target/release/metal6"
printf '%-22s %6s %8s %9s %9s %9s %11s %9s %9s\n' "shell" "sats" "workers" "create s" "update s" "worker s" "teardown s" "MiB" "crossing"
for run in "40x50" "80x50" "80x50 w-01,w-02"; do
  set -- $run
  shell=$1 nodes=${2:-}
  # The kernel frees the last run's namespaces in the background: let it finish first.
  sleep 20
  out=$("$M6" emulate run --shell "$shell" --altitude-km 550 --inclination 53 ${nodes:+--nodes "$nodes"} -o json 2>/dev/null) || {
    echo "$run: failed (see: $M6 emulate run --shell $shell ${nodes:+--nodes $nodes})"; continue; }
  python3 - "$shell" "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
w = r.get("update_per_worker_s")
borders = ", ".join(f"{a}↔{b} {n}" for a, b, n in (r.get("per_border") or []))
print(f"{sys.argv[1]:<22} {r['satellites']:>6} {r['workers']:>8} {r['create_s']:>9.2f} {r['update_s']:>9.3f} "
      f"{(f'{w:.3f}' if w is not None else '-'):>9} {r['teardown_s']:>11.2f} {r['memory_mib']:>9} {r['crossing']:>9}"
      + (f"  ({borders})" if borders else ""))
PY
done
echo "targets at 2,000 x 5: create <= 20 s, update <= 0.5 s, teardown <= 2 s"
echo "targets at 4,000 x 5 over two workers: create per satellite <= one worker's, a worker's update <= 0.5 s"
