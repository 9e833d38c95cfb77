#!/usr/bin/env bash
# make soak-emulation: the issue-#22 soak. A 2,000-satellite shell (40 x 50 at 550 km, 80°:
# its cross-plane links go dormant above 75° of latitude, so links switch all the time) in
# namespaces, Debian's FRR IS-IS on an 8 x 8 block of it, ground stations picking satellites,
# the model run at 20x real time for SOAK_SECONDS (default 3600) of wall clock. Every step
# compares each link end with the model; every minute it samples memory, descriptors, slab and
# neighbours and waits for IS-IS to agree with the model. Prints the one-page summary (also in
# $SOAK_DIR/summary.txt, every sample in report.json) and exits 1 when the soak fails.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
cargo build -q --release --locked -p metal6-cli
M6="$PWD/target/release/metal6"
dir="${SOAK_DIR:-target/soak}"
mkdir -p "$dir"
rm -rf "$dir/work"
# The soak runs on a host tuned as a dense-pods worker would be: the profile's values from
# inventory/example-dell.yaml applied raise-only (as the node does at boot), put back after.
# Without them the neighbour table alone fails it (docs/images.md).
profile=$("$M6" -o json inventory show inventory/example-dell.yaml | python3 -c '
import json, sys
for n in json.load(sys.stdin):
    if (n.get("sysctl") or {}).get("name") == "dense-pods":
        for k, v in n["sysctl"]["values"].items():
            if isinstance(v, int):
                print(k, v)
        break
')
restore=()
# Set before the first change: whatever stops the script, what it raised goes back.
trap '[ ${#restore[@]} -eq 0 ] || sysctl -qw "${restore[@]}"' EXIT
while read -r key want; do
  f="/proc/sys/${key//./\/}"
  [ -w "$f" ] || continue
  have=$(cat "$f")
  if [ "$have" -lt "$want" ]; then
    restore+=("$key=$have")
    sysctl -qw "$key=$want" || echo "soak: cannot raise $key to $want" >&2
  fi
done <<<"$profile"
echo "soak: dense-pods values raised for the run: ${#restore[@]} (${restore[*]:-none}; put back after)" >&2
status=0
"$M6" emulate soak --shell "${SOAK_SHELL:-40x50}" --altitude-km 550 --inclination 80 --phasing 1 \
  --station darmstadt:49.87:8.65 --station svalbard:78.23:15.41 --station santiago:-33.45:-70.67 \
  --duration "${SOAK_SECONDS:-3600}" --speed "${SOAK_SPEED:-20}" --routers "${SOAK_ROUTERS:-8x8}" \
  --check-every "${SOAK_CHECK_EVERY:-60}" --workdir "$dir/work" --report "$dir/report.json" \
  >"$dir/summary.txt" || status=$?
cat "$dir/summary.txt"
exit "$status"
