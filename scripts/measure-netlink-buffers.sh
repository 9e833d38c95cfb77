#!/usr/bin/env bash
# Why the dense-pods profile raises net.core.rmem_default / rmem_max (docs/images.md): a
# process on the node that follows link changes through rtnetlink (an `ip monitor`, a CNI or
# network daemon, a Go program using vishvananda/netlink's LinkSubscribe) while the link agent
# creates the constellation's ISL ends on the node (4,000 veth pairs for 40 x 50 = 8,000
# interfaces, as `metal6 emulate agent` does). The listener reads as fast as it can; what it
# loses is what its socket buffer could not hold (ENOBUFS: it must then dump everything again).
# Run as root; it sets the two sysctls for each case and puts them back. Only a namespace of
# its own is touched.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
M6="${M6:-$PWD/target/release/metal6}"
[ -x "$M6" ] || cargo build -q --release --locked -p metal6-cli
ns="m6x-$$-nlbuf"
old_def=$(sysctl -n net.core.rmem_default) old_max=$(sysctl -n net.core.rmem_max)
cleanup() {
  sysctl -qw net.core.rmem_default="$old_def" net.core.rmem_max="$old_max"
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
listener='
import errno, socket, sys, time
ask = int(sys.argv[1])
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
if ask:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, ask)
s.bind((0, 1))  # RTMGRP_LINK
s.settimeout(5)
got, lost, start = 0, 0, None
open(sys.argv[2], "w").write("ready\n")
while True:
    try:
        data = s.recv(1 << 20)
    except socket.timeout:
        break
    except OSError as e:
        if e.errno == errno.ENOBUFS:
            lost += 1
            continue
        raise
    start = start or time.time()
    i = 0
    while i + 16 <= len(data):
        n = int.from_bytes(data[i:i + 4], sys.byteorder)
        if n < 16:
            break
        got += 1
        i += (n + 3) & ~3
print(f"{s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)} {got} {lost}")
'
printf '%-16s %-14s %-12s %12s %10s %9s\n' rmem_default rmem_max "SO_RCVBUF" "buffer" "messages" ENOBUFS
for case in "212992 212992 0" "212992 212992 8388608" "16777216 16777216 0" "212992 16777216 8388608"; do
  set -- $case
  sysctl -qw net.core.rmem_default="$1" net.core.rmem_max="$2"
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  ready=$(mktemp)
  ip netns exec "$ns" python3 -c "$listener" "$3" "$ready" >"$ready.out" &
  pid=$!
  until [ -s "$ready" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "the listener died: $(cat "$ready.out")" >&2; exit 1; }
    sleep 0.1
  done
  ip netns exec "$ns" "$M6" emulate agent --shell 40x50 --altitude-km 550 --inclination 80 --once >/dev/null 2>&1
  wait "$pid"
  read -r buf got lost <"$ready.out"
  printf '%-16s %-14s %-12s %12s %10s %9s\n' "$1" "$2" "$3" "$buf" "$got" "$lost"
  rm -f "$ready" "$ready.out"
done
