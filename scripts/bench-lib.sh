# Shared by the benchmark scripts: one throwaway namespace with a dummy interface holding the
# lab boot-server address (on a veth whose peer stays in the namespace), cleaned up on exit (and leftovers of dead runs removed first).
# Traffic to an address of the namespace itself goes over its loopback path.

bench_ns_setup() {
  BENCH_NS="m6b-$$-$1"
  for ns in $(ip netns list | awk '/^m6b-/{print $1}'); do
    local pid=${ns#m6b-}; pid=${pid%%-*}
    if [[ ! -d /proc/$pid ]]; then
      for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  ip netns add "$BENCH_NS"
  ip netns exec "$BENCH_NS" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
  ip netns exec "$BENCH_NS" ip link set lo up
  # No dummy module on every kernel: a veth pair with both ends in the namespace does the same.
  ip netns exec "$BENCH_NS" ip link add m6d0 type veth peer name m6d1
  ip netns exec "$BENCH_NS" ip link set m6d0 up
  ip netns exec "$BENCH_NS" ip link set m6d1 up
  ip netns exec "$BENCH_NS" ip -6 addr add fd00:6d:1::1/64 dev m6d0 nodad
  trap bench_ns_cleanup EXIT
}

bench_ns_cleanup() {
  for p in $(ip netns pids "$BENCH_NS" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$BENCH_NS" 2>/dev/null || true
  [[ -n ${BENCH_WORK:-} ]] && rm -rf "$BENCH_WORK"
}

in_ns() { ip netns exec "$BENCH_NS" "$@"; }

# Waits for a TCP or UDP listener on PORT in the namespace.
wait_listen() {
  local proto=$1 port=$2
  for _ in $(seq 100); do
    in_ns ss -Hl"${proto}"n "sport = :$port" | grep -q ":$port" && return 0
    sleep 0.1
  done
  echo "bench: nothing listens on $proto port $port" >&2
  return 1
}

# Peak resident set (VmHWM, KiB) of a process.
peak_rss() { awk '/VmHWM/{print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
