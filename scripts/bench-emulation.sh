#!/usr/bin/env bash
# make bench-emulation: metal6 emulate run --backend netns at 2,000 satellites x 5 interfaces
# (40 x 50 at 550 km, 53°: 10,000 interfaces), then 4,000 x 5 (80 x 50). Prints create, one
# full link-state update, teardown and memory for each. Targets (issue #9) at 2,000: create
# <= 20 s (a shell-script baseline took 42 s here), update <= 0.5 s, teardown <= 2 s.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
cargo build -q --release --locked -p metal6-cli
M6="$PWD/target/release/metal6"
printf '%-22s %10s %10s %10s %10s %12s\n' "shell" "sats" "create s" "update s" "teardown s" "memory MiB"
for shell in 40x50 80x50; do
  out=$("$M6" emulate run --shell "$shell" --altitude-km 550 --inclination 53 -o json 2>/dev/null) || {
    echo "$shell: failed (see: $M6 emulate run --shell $shell)"; continue; }
  python3 - "$shell" "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
print(f"{sys.argv[1]:<22} {r['satellites']:>10} {r['create_s']:>10.2f} {r['update_s']:>10.3f} {r['teardown_s']:>10.2f} {r['memory_mib']:>12}")
PY
done
echo "targets at 2,000 x 5: create <= 20 s, update <= 0.5 s, teardown <= 2 s"
