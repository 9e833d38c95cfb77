#!/usr/bin/env bash
# make bench-tftp: one SIZE_MB file over TFTP (atftp's client, blksize 1428) from metal6 serve,
# tftpd-hpa and atftpd, one server after the other in the same run and namespace; each figure
# is the median of RUNS transfers, and every transfer is checked byte for byte.
#   lock-step (no windowsize: most UEFI PXE firmware): metal6 vs tftpd-hpa (and atftpd)
#   windowed (RFC 7440, windowsize 16 and 64): metal6 vs atftpd (tftpd-hpa has no windowsize)
# Targets: lock-step >= 1.0x tftpd-hpa, windowed >= 1.0x atftpd.
# Peers as packaged by Debian 12 with their defaults: tftpd-hpa 5.2 (`in.tftpd --listen
# --secure`), atftpd 0.8 (its .deb unpacked into the scratch dir, not installed: as a package
# it would replace tftpd-hpa's in.tftpd; started inetd-style on an IPv6 socket, which is how its
# systemd unit runs it, since its --bind-address takes IPv4 only). The server runs on CPU 0 and
# the client on CPU 1 for every server alike.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

SIZE_MB=${SIZE_MB:-100}
RUNS=${RUNS:-3}
BENCH_WORK=$(mktemp -d /tmp/metal6-bench-tftp.XXXXXX)
cargo build -q --release --locked -p metal6-cli
M6="$PWD/target/release/metal6"

# atftpd from Debian's archive, unpacked here.
(cd "$BENCH_WORK" && apt-get download -q atftpd >/dev/null 2>&1) || { echo "bench: apt-get download atftpd failed" >&2; exit 1; }
dpkg-deb -x "$BENCH_WORK"/atftpd_*.deb "$BENCH_WORK/atftpd"
ATFTPD="$BENCH_WORK/atftpd/usr/sbin/atftpd"
"$ATFTPD" --version >/dev/null 2>&1 || { echo "bench: atftpd does not run (libwrap0 missing?): $("$ATFTPD" --version 2>&1)" >&2; exit 1; }

bench_ns_setup tftp
chmod 755 "$BENCH_WORK"
mkdir -p "$BENCH_WORK/www" "$BENCH_WORK/state"
head -c "$((SIZE_MB * 1000 * 1000))" /dev/urandom >"$BENCH_WORK/www/big.bin"
chmod 644 "$BENCH_WORK/www/big.bin"; chmod 755 "$BENCH_WORK/www"

# Seconds to fetch big.bin with atftp from PORT; extra atftp options follow.
fetch_once() {
  local port=$1; shift
  local start end
  rm -f "$BENCH_WORK/got.bin"
  start=$(date +%s.%N)
  in_ns taskset -c 1 timeout 600 atftp --option "blksize 1428" "$@" -g -r big.bin -l "$BENCH_WORK/got.bin" fd00:6d:1::1 "$port" >/dev/null
  end=$(date +%s.%N)
  cmp -s "$BENCH_WORK/got.bin" "$BENCH_WORK/www/big.bin" || { echo "bench: corrupt transfer from port $port" >&2; exit 1; }
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
}

# Server CPU: each server runs in a cpuacct cgroup of its own, so the CPU of the processes it
# forks (tftpd-hpa: one per transfer) counts too.
CG=/sys/fs/cgroup/cpuacct/m6b-$$-tftp
trap 'bench_ns_cleanup; rmdir "$CG"/* "$CG" 2>/dev/null || true' EXIT
# Runs server NAME (then its command) in the namespace and its cgroup, on CPU 0.
start_server() {
  local name=$1; shift
  mkdir -p "$CG/$name"
  ( echo "$BASHPID" >"$CG/$name/tasks"; exec ip netns exec "$BENCH_NS" taskset -c 0 "$@" ) & disown
}
cpu_ns() { cat "$CG/$1/cpuacct.usage"; }

echo "bench-tftp: ${SIZE_MB} MB, blksize 1428, median of $RUNS transfers each (servers taken in turn)"
start_server metal6 "$M6" serve -i inventory/lab.yaml --interface m6d0 --state-dir "$BENCH_WORK/state" --no-ra --no-http \
  --artifacts "$BENCH_WORK/www" >"$BENCH_WORK/metal6.log" 2>&1
start_server hpa in.tftpd --listen --foreground --address "[fd00:6d:1::1]:6969" --secure "$BENCH_WORK/www" \
  >"$BENCH_WORK/tftpd.log" 2>&1
# atftpd reads requests from the socket on its stdin (inetd mode), as its systemd unit starts it.
start_server atftpd python3 -c 'import os, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("fd00:6d:1::1", 6970)); os.dup2(s.fileno(), 0)
os.execv(sys.argv[1], sys.argv[1:])' "$ATFTPD" --user root --group root --tftpd-timeout 3600 --logfile "$BENCH_WORK/atftpd.log" "$BENCH_WORK/www"
wait_listen u 69; wait_listen u 6969; wait_listen u 6970

# The cells: name, server, port, atftp options.
CELLS=(
  "m6_w16 metal6 69 windowsize=16" "at_w16 atftpd 6970 windowsize=16"
  "m6_w64 metal6 69 windowsize=64" "at_w64 atftpd 6970 windowsize=64"
  "m6_l metal6 69 -" "hpa_l hpa 6969 -" "at_l atftpd 6970 -"
)
declare -A SECS CPU
for run in $(seq "$RUNS"); do
  for cell in "${CELLS[@]}"; do
    read -r name server port opt <<<"$cell"
    args=(); [[ $opt != - ]] && args=(--option "${opt/=/ }")
    before=$(cpu_ns "$server")
    t=$(fetch_once "$port" "${args[@]}")
    after=$(cpu_ns "$server")
    SECS[$name]+="$t "
    CPU[$name]+="$(( (after - before) / 1000000 )) "
  done
  echo "  run $run of $RUNS done"
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# "MEDIAN_SECONDS MEDIAN_SERVER_CPU_MS" of a cell.
cell() { echo "$(median "${SECS[$1]}") $(median "${CPU[$1]}")"; }
M6_W16=$(cell m6_w16); AT_W16=$(cell at_w16); M6_W64=$(cell m6_w64); AT_W64=$(cell at_w64)
M6_L=$(cell m6_l); HPA_L=$(cell hpa_l); AT_L=$(cell at_l)

secs() { echo "${1% *}"; }
mbps() { awk -v s="$(secs "$1")" -v mb="$SIZE_MB" 'BEGIN { printf "%.1f", mb / s }'; }
row() { printf '%-40s %10s %10s %14s\n' "$1" "$(secs "$2")" "$(mbps "$2")" "${2#* }"; }
printf '\n%-40s %10s %10s %14s\n' "" "seconds" "MB/s" "server CPU ms"
row "metal6, windowsize 16" "$M6_W16"
row "atftpd, windowsize 16" "$AT_W16"
row "metal6, windowsize 64" "$M6_W64"
row "atftpd, windowsize 64" "$AT_W64"
row "metal6, lock-step" "$M6_L"
row "tftpd-hpa, lock-step (no windowsize)" "$HPA_L"
row "atftpd, lock-step" "$AT_L"
r() { printf '%-52s %8s\n' "$1" "$(ratio "$(secs "$2")" "$(secs "$3")")"; }
r "ratio metal6 windowed / atftpd windowed (16)" "$AT_W16" "$M6_W16"
r "ratio metal6 windowed / atftpd windowed (64)" "$AT_W64" "$M6_W64"
r "ratio lock-step / tftpd-hpa" "$HPA_L" "$M6_L"
r "ratio lock-step / atftpd lock-step" "$AT_L" "$M6_L"
cpu() { printf '%-52s %8s\n' "$1" "$(ratio "${2#* }" "${3#* }")"; }
cpu "server CPU per transfer, tftpd-hpa / metal6 (lock-step)" "$HPA_L" "$M6_L"
cpu "server CPU per transfer, atftpd / metal6 (windowed 64)" "$AT_W64" "$M6_W64"
echo "targets: windowed >= 1.0x atftpd, lock-step >= 1.0x tftpd-hpa (throughput; the client is on its own core)"
