#!/usr/bin/env bash
# make bench-http: CLIENTS concurrent downloads of a SIZE_MB artifact from metal6 serve and
# from nginx-light (sendfile on), one after the other in the same run and namespace, the
# clients spread over SOURCES (4) source addresses. Prints
# throughput for both, the ratio (target >= 0.95) and metal6's peak RSS (target <= 64 MiB).
set -euo pipefail
shopt -s inherit_errexit   # a failed transfer inside $(...) must abort the benchmark
cd "$(dirname "$0")/.."
source scripts/bench-lib.sh

CLIENTS=${CLIENTS:-100}
SIZE_MB=${SIZE_MB:-1024}
BENCH_WORK=$(mktemp -d /tmp/metal6-bench-http.XXXXXX)
cargo build -q --release --locked -p metal6-cli
M6="$PWD/target/release/metal6"
bench_ns_setup http

mkdir -p "$BENCH_WORK/www/images" "$BENCH_WORK/state" "$BENCH_WORK/nginx"
# nginx's workers run as an unprivileged user: they must be able to read the files.
chmod 755 "$BENCH_WORK" "$BENCH_WORK/www" "$BENCH_WORK/www/images"
# A sparse file reads as zeros from the page cache: the benchmark measures the servers, not
# the disk (both servers read the same file).
truncate -s "${SIZE_MB}M" "$BENCH_WORK/www/images/disk.raw"
cat "$BENCH_WORK/www/images/disk.raw" >/dev/null

cat >"$BENCH_WORK/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $BENCH_WORK/nginx/nginx.pid;
error_log $BENCH_WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $BENCH_WORK/nginx;
  proxy_temp_path $BENCH_WORK/nginx;
  fastcgi_temp_path $BENCH_WORK/nginx;
  uwsgi_temp_path $BENCH_WORK/nginx;
  scgi_temp_path $BENCH_WORK/nginx;
  server { listen [fd00:6d:1::1]:8081; root $BENCH_WORK/www; }
}
CONF

# The clients come from SOURCES addresses, as a fleet's nodes come from theirs: metal6 takes at
# most 64 connections per source address (docs/security.md), and 100 downloads from one
# address would measure that limit, not the server. Both servers get the same clients.
SOURCES=${SOURCES:-4}
for i in $(seq "$SOURCES"); do in_ns ip -6 addr add "fd00:6d:1::$((0x10 + i))/64" dev m6d0 nodad; done

# CLIENTS parallel transfers, bodies discarded, in one curl process per source address;
# prints MB/s.
fetch_all() {
  local url=$1 start end pids=() per=$(( (CLIENTS + SOURCES - 1) / SOURCES )) left=$CLIENTS n args
  start=$(date +%s.%N)
  for i in $(seq "$SOURCES"); do
    n=$(( left < per ? left : per )); left=$(( left - n ))
    (( n > 0 )) || continue
    args=()
    for _ in $(seq "$n"); do args+=(-o /dev/null "$url"); done
    in_ns curl -sS --no-progress-meter -g --fail --interface "fd00:6d:1::$((0x10 + i))" \
      --parallel --parallel-max "$n" "${args[@]}" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  end=$(date +%s.%N)
  # --fail above: any HTTP error aborts; a short body would fail curl's length check.
  awk -v s="$start" -v e="$end" -v n="$CLIENTS" -v mb="$SIZE_MB" 'BEGIN { printf "%.0f", n * mb / (e - s) }'
}

echo "bench-http: $CLIENTS concurrent downloads of a $SIZE_MB MiB artifact over the loopback path"
in_ns "$M6" serve -i inventory/lab.yaml --interface m6d0 --state-dir "$BENCH_WORK/state" --no-ra --no-tftp \
  --artifacts "$BENCH_WORK/www" >"$BENCH_WORK/metal6.log" 2>&1 &
wait_listen t 8080
M6_PID=$(pgrep -f "metal6 serve -i inventory/lab.yaml --interface m6d0" | head -1)
M6_RATE=$(fetch_all "http://[fd00:6d:1::1]:8080/images/disk.raw")
M6_RSS=$(peak_rss "$M6_PID")
kill "$M6_PID"

in_ns nginx -c "$BENCH_WORK/nginx/nginx.conf" -g 'daemon off;' >"$BENCH_WORK/nginx.log" 2>&1 &
wait_listen t 8081
NGINX_RATE=$(fetch_all "http://[fd00:6d:1::1]:8081/images/disk.raw")

printf '\n%-32s %12s %12s %8s\n' "" "metal6" "nginx" "ratio"
printf '%-32s %12s %12s %8s\n' "throughput (MiB/s)" "$M6_RATE" "$NGINX_RATE" "$(ratio "$M6_RATE" "$NGINX_RATE")"
printf '%-32s %12s\n' "metal6 peak RSS (KiB)" "$M6_RSS"
echo "targets: ratio >= 0.95; metal6 peak RSS <= 65536 KiB"
