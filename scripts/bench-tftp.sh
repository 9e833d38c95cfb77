#!/usr/bin/env bash
# make bench-tftp: one SIZE_MB file over TFTP from metal6 serve (atftp client, blksize 1428,
# windowsize WINDOW) and from tftpd-hpa (atftp client, blksize 1428; tftpd-hpa has no
# windowsize), one after the other in the same run and namespace. Prints seconds, MB/s and the
# ratio (target: metal6 >= 3x tftpd-hpa). Both transfers are checked byte for byte.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

SIZE_MB=${SIZE_MB:-100}
WINDOW=${WINDOW:-64}
BENCH_WORK=$(mktemp -d /tmp/metal6-bench-tftp.XXXXXX)
cargo build -q --release --locked -p metal6-cli
M6="$PWD/target/release/metal6"
bench_ns_setup tftp
chmod 755 "$BENCH_WORK"
mkdir -p "$BENCH_WORK/www" "$BENCH_WORK/state"
head -c "$((SIZE_MB * 1000 * 1000))" /dev/urandom >"$BENCH_WORK/www/big.bin"
chmod 644 "$BENCH_WORK/www/big.bin"; chmod 755 "$BENCH_WORK/www"

# Seconds to fetch big.bin with atftp from PORT; extra atftp options follow.
fetch() {
  local port=$1; shift
  local start end
  rm -f "$BENCH_WORK/got.bin"
  start=$(date +%s.%N)
  in_ns timeout 600 atftp --option "blksize 1428" "$@" -g -r big.bin -l "$BENCH_WORK/got.bin" fd00:6d:1::1 "$port" >/dev/null
  end=$(date +%s.%N)
  cmp -s "$BENCH_WORK/got.bin" "$BENCH_WORK/www/big.bin" || { echo "bench: corrupt transfer from port $port" >&2; exit 1; }
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}

echo "bench-tftp: ${SIZE_MB} MB, blksize 1428; metal6 with windowsize $WINDOW, tftpd-hpa lock-step"
in_ns "$M6" serve -i inventory/lab.yaml --interface m6d0 --state-dir "$BENCH_WORK/state" --no-ra --no-http \
  --artifacts "$BENCH_WORK/www" >"$BENCH_WORK/metal6.log" 2>&1 &
wait_listen u 69
M6_S=$(fetch 69 --option "windowsize $WINDOW")
M6_S1=$(fetch 69)
kill "$(pgrep -f "metal6 serve -i inventory/lab.yaml --interface m6d0" | head -1)"

in_ns in.tftpd --listen --foreground --address "[fd00:6d:1::1]:6969" --secure "$BENCH_WORK/www" >"$BENCH_WORK/tftpd.log" 2>&1 &
wait_listen u 6969
HPA_S=$(fetch 6969)

mbps() { awk -v s="$1" -v mb="$SIZE_MB" 'BEGIN { printf "%.1f", mb / s }'; }
printf '\n%-36s %10s %12s\n' "" "seconds" "MB/s"
printf '%-36s %10s %12s\n' "metal6, windowsize $WINDOW" "$M6_S" "$(mbps "$M6_S")"
printf '%-36s %10s %12s\n' "metal6, lock-step (no windowsize)" "$M6_S1" "$(mbps "$M6_S1")"
printf '%-36s %10s %12s\n' "tftpd-hpa (no windowsize support)" "$HPA_S" "$(mbps "$HPA_S")"
printf '%-36s %10s\n' "ratio metal6 windowed / tftpd-hpa" "$(ratio "$HPA_S" "$M6_S")"
printf '%-36s %10s\n' "ratio lock-step / tftpd-hpa" "$(ratio "$HPA_S" "$M6_S1")"
echo "target: windowed ratio >= 3"
