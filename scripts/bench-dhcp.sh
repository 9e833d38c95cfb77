#!/usr/bin/env bash
# make bench-dhcp: the highest rate each DHCPv6 server completes with 0 % drops, found by a
# ramp over offered rates and a bisection after the first step with drops; metal6 serve,
# kea-dhcp6 single-threaded and kea-dhcp6 multi-threaded, each direct and relayed, in one run.
#
# Every step: fresh namespaces, the server started empty and pinned to CPU 0, perfdhcp -6
# (single-thread mode, the right one on one core) pinned to CPU 1, STEP seconds of 4-way
# exchanges from CLIENTS distinct clients, then 1 s for late replies. A step is clean when
# perfdhcp counts no drop in either exchange; a step with drops runs once more and the better
# try counts (RETRY, for every server alike). Each step also prints where packets were lost:
# the server namespace's UDP receive-buffer errors (the server's socket) and the client
# namespace's (the generator's own socket).
#
# Generator: perfdhcp's socket gets a 4 MiB receive buffer (net.core.rmem_default is raised
# only while perfdhcp runs and restored; the servers' sockets exist before and keep theirs).
# With the default 208 KiB, perfdhcp's own socket overflows above ~6,000 exchanges/s against
# metal6 (measured: the client namespace's Udp6RcvbufErrors equal perfdhcp's drops while the
# server namespace shows every message answered), which would count the generator's limit
# against the server. perfdhcp's default multi-thread mode overflows it too when pinned to one
# core (its receiving thread waits for the sending one).
#
# Peers as Debian 12 packages them: Kea 2.2, memfile leases with persist (each lease appended to
# its CSV, not synced), defaults otherwise; multi-threaded: enable-multi-threading with its
# default pool and queue sizes. metal6 as shipped: every Reply leaves only after its lease is
# fdatasynced.
#
# On PostgreSQL (Debian's 15, one private server for the run, started by this script in its work
# dir, Unix socket only, fsync and synchronous_commit on, pinned to CPU 0 with the DHCP server,
# every step on a fresh database): metal6-pg is `serve --state postgres://` (a Reply after its
# transaction commits), kea-pg is Kea's PostgreSQL lease backend (`kea-admin db-init pgsql`),
# same pool; metal6-pg2 is two `serve --state` sharing that database, both on the client's link
# (a bridge: every Solicit reaches both, as a relay forwarding to every server makes it), both
# on CPU 0. Their CPU column counts the DHCP server process(es) only, not PostgreSQL.
#
# Hosts of a fixed size (metal6-pg-cap, metal6-pg2-cap): the same one and two servers, each
# server process in its own CPU cgroup capped at CAP_CPU of one CPU (0.2), PostgreSQL and the
# generator uncapped. Scale-out adds hosts, so what it must show is that each server's capacity
# adds up through the shared database; on this 2-core machine the uncapped two servers and
# PostgreSQL share one core, so two cannot beat one there whatever the design (each server
# decodes every Solicit it sees, follows the other's bindings and commits its own
# transactions). With a cap the servers are the bottleneck, as on hosts of their own, and
# PostgreSQL has the rest of CPU 0. What it cannot show: PostgreSQL on its own host, the
# network between the hosts, or what a database host saturated by many servers does.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

STEP=${STEP:-10}
CLIENTS=${CLIENTS:-60000}
RATES=${RATES:-2000 4000 6000 8000 10000 12000 14000 16000 20000 24000 28000 32000 36000 40000 44000 48000}
# Servers on PostgreSQL start lower: a database round trip per exchange.
PG_RATES=${PG_RATES:-250 500 1000 1500 2000 3000 4000 5000 6000 8000 10000 12000 16000 20000}
SERVERS=${SERVERS:-metal6 kea kea-mt metal6-pg kea-pg metal6-pg2 metal6-pg-cap metal6-pg2-cap}
CAP_CPU=${CAP_CPU:-0.2}
MODES=${MODES:-direct relayed}
BISECT=${BISECT:-2}
RETRY=${RETRY:-1}
TAG="m6b-$$"
WORK=$(mktemp -d /tmp/metal6-bench-dhcp.XXXXXX)
SRV="$TAG-srv"; SRV2="$TAG-srv2"; CLI="$TAG-cli"
RMEM_DEFAULT=$(sysctl -n net.core.rmem_default)

teardown_link() {
  for ns in "$SRV" "$SRV2" "$CLI"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  cg_clean
}
cleanup() {
  sysctl -qw net.core.rmem_default="$RMEM_DEFAULT"
  teardown_link
  pg_stop
  [[ -n ${KEEP:-} ]] || rm -rf "$WORK"
}
# The capped servers' CPU cgroups (cgroup v2, or v1's cpu controller): cg_dir NAME.
CG_ROOT=
if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
  CG_ROOT=/sys/fs/cgroup
  # Enables the cpu controller for the root's children (a system change, left in place: it
  # limits nothing by itself).
  grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || CG_ROOT=
elif [[ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
  CG_ROOT=/sys/fs/cgroup/cpu
fi
cg_dir() { echo "$CG_ROOT/$TAG-$1"; }
# A cgroup NAME whose members together get at most CAP_CPU of one CPU, over 10 ms periods
# (the default 100 ms would stop a server for up to 80 ms at a time, which no small host does).
cg_make() {
  local d quota
  d=$(cg_dir "$1"); quota=$(awk -v c="$CAP_CPU" 'BEGIN { printf "%d", c * 10000 }')
  mkdir -p "$d"
  if [[ -f $d/cpu.max ]]; then echo "$quota 10000" >"$d/cpu.max"
  else echo 10000 >"$d/cpu.cfs_period_us"; echo "$quota" >"$d/cpu.cfs_quota_us"; fi
}
# Removes this run's cgroups once their processes have gone.
cg_clean() {
  [[ -n $CG_ROOT ]] || return 0
  local d
  for d in "$CG_ROOT/$TAG"-*; do
    [[ -d $d ]] || continue
    for _ in $(seq 50); do rmdir "$d" 2>/dev/null && break; sleep 0.1; done
  done
  return 0
}
trap cleanup EXIT
# Leftovers of earlier runs whose shell is gone.
for ns in $(ip netns list | awk '/^m6b-/{print $1}'); do
  pid=${ns#m6b-}; pid=${pid%%-*}
  if [[ ! -d /proc/$pid ]]; then
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  fi
done

if [[ -n $CG_ROOT ]]; then
  for d in "$CG_ROOT"/m6b-*; do
    [[ -d $d ]] || continue
    pid=${d##*/m6b-}; pid=${pid%%-*}
    [[ -d /proc/$pid ]] || rmdir "$d" 2>/dev/null || true
  done
elif [[ " $SERVERS " == *-cap* ]]; then
  echo "bench: no CPU cgroup controller here: the capped servers (metal6-pg-cap, metal6-pg2-cap) are left out"
  SERVERS=$(tr ' ' '\n' <<<"$SERVERS" | { grep -v -- '-cap$' || true; } | paste -sd ' ')
  [[ -n $SERVERS ]] || exit 0
fi

cargo build -q --release --locked -p metal6-cli
M6="$PWD/target/release/metal6"

# The private PostgreSQL, when a server on it is benchmarked.
PGDIR="$WORK/pg"
PGBIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -1)
PG_RUNNING=0
pg_start() {
  [[ -x $PGBIN/initdb ]] || { echo "bench: PostgreSQL is not installed (make deps)" >&2; exit 1; }
  chmod 711 "$WORK"; mkdir -p "$PGDIR"; chown postgres:postgres "$PGDIR"
  runuser -u postgres -- "$PGBIN/initdb" -D "$PGDIR/data" -U metal6 --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
  printf "listen_addresses = ''\nunix_socket_directories = '%s'\nfsync = on\nsynchronous_commit = on\n" "$PGDIR" \
    >>"$PGDIR/data/postgresql.conf"
  taskset -c 0 runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w start >/dev/null
  PG_RUNNING=1
}
pg_stop() {
  ((PG_RUNNING)) && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate -w stop >/dev/null 2>&1
  PG_RUNNING=0
  return 0
}
fresh_db() {
  PGOPTIONS=--client-min-messages=warning "$PGBIN/psql" -X -q -h "$PGDIR" -U metal6 -d postgres \
    -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench" >/dev/null
}
[[ " $SERVERS " == *" metal6-pg"* || " $SERVERS " == *" kea-pg "* ]] && pg_start
PG_URL="postgres://metal6@/bench?host=$PGDIR&sslmode=disable"

setup_link() {
  local servers=${1:-1}
  ip netns add "$SRV"; ip netns add "$CLI"
  ((servers == 2)) && ip netns add "$SRV2"
  for ns in "$SRV" "$CLI" $( ((servers == 2)) && echo "$SRV2"); do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip netns exec "$ns" ip link set lo up
  done
  if ((servers == 2)); then
    # The client's link is a bridge with both servers on it.
    ip netns exec "$CLI" ip link add m6c0 type bridge
    ip netns exec "$CLI" ip link set m6c0 address 02:6d:00:00:00:99
    ip link add m6s0 netns "$SRV" type veth peer name m6p1 netns "$CLI"
    ip link add m6s0 netns "$SRV2" type veth peer name m6p2 netns "$CLI"
    for p in m6p1 m6p2; do ip netns exec "$CLI" ip link set "$p" master m6c0 up; done
    ip netns exec "$SRV2" ip link set m6s0 address 02:6d:00:00:00:a2
    ip netns exec "$SRV2" ip link set m6s0 up
    ip netns exec "$SRV2" ip -6 addr add fd00:6d:1::2/64 dev m6s0 nodad
  else
    ip link add m6s0 netns "$SRV" type veth peer name m6c0 netns "$CLI"
  fi
  # A MAC outside the inventory: perfdhcp's clients are unknown and served from the pool.
  ip netns exec "$CLI" ip link set m6c0 address 02:6d:00:00:00:99
  ip netns exec "$SRV" ip link set m6s0 up
  ip netns exec "$CLI" ip link set m6c0 up
  ip netns exec "$SRV" ip -6 addr add fd00:6d:1::1/64 dev m6s0 nodad
  # The relay's address for -A 1 (perfdhcp puts it in link-address; both servers pick the
  # subnet by it).
  ip netns exec "$CLI" ip -6 addr add fd00:6d:1::fe/64 dev m6c0 nodad
  for _ in $(seq 100); do
    ip netns exec "$CLI" ip -6 addr show dev m6c0 scope link | grep -q fe80 && return 0
    sleep 0.1
  done
  echo "bench: link-local address never came up" >&2; exit 1
}

# wait_log WHAT PATTERN FILE: up to 10 s for PATTERN in FILE; the bench stops if it never comes
# (a step measured before both servers share the clients would measure something else).
wait_log() {
  for _ in $(seq 100); do grep -q -- "$2" "$3" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: waited 10 s for $1" >&2; tail -n 20 "$3" >&2; exit 1
}

start_server() {
  local server=$1
  rm -rf "$WORK/state"; mkdir -p "$WORK/state"
  case $server in
    metal6)
      ip netns exec "$SRV" taskset -c 0 "$M6" serve -i tests/netboot/pool.yaml --interface m6s0 \
        --state-dir "$WORK/state" --no-ra >"$WORK/server.log" 2>&1 & disown
      ;;
    metal6-pg | metal6-pg2 | metal6-pg-cap | metal6-pg2-cap)
      fresh_db
      # Uncapped: run as is. Capped: the process enters its own CPU cgroup, then execs (before
      # `ip netns exec`, which mounts a sysfs of the namespace's own without the cgroups).
      local cap1=() cap2=()
      if [[ $server == *-cap ]]; then
        cg_make srv1; cg_make srv2
        cap1=(bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$(cg_dir srv1)")
        cap2=(bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$(cg_dir srv2)")
      fi
      "${cap1[@]}" ip netns exec "$SRV" taskset -c 0 "$M6" serve -i tests/netboot/pool.yaml --interface m6s0 \
        --state-dir "$WORK/state" --no-ra --no-http --no-tftp --state "$PG_URL" --server-name bench-1 \
        >"$WORK/server.log" 2>&1 & disown
      if [[ $server == metal6-pg2* ]]; then
        # After the first has migrated and published: the second starts on a ready database.
        wait_log "the first server to listen" "DHCPv6 listening" "$WORK/server.log"
        mkdir -p "$WORK/state2"
        "${cap2[@]}" ip netns exec "$SRV2" taskset -c 0 "$M6" serve -i tests/netboot/pool.yaml --interface m6s0 \
          --state-dir "$WORK/state2" --no-ra --no-http --no-tftp --state "$PG_URL" --server-name bench-2 \
          >"$WORK/server2.log" 2>&1 & disown
        # Both servers heartbeating and sharing the clients out, as in production, before any
        # client arrives (until then each answers everything).
        local both='servers sharing the clients servers=\["bench-1", "bench-2"\]'
        wait_log "the first server to share the clients with the second" "$both" "$WORK/server.log"
        wait_log "the second server to share the clients with the first" "$both" "$WORK/server2.log"
      fi
      ;;
    kea | kea-mt | kea-pg)
      local mt=false lease_db
      [[ $server == kea-mt ]] && mt=true
      if [[ $server == kea-pg ]]; then
        fresh_db
        kea-admin db-init pgsql -u metal6 -n bench -h "$PGDIR" >"$WORK/kea-admin.log" 2>&1 \
          || { echo "bench: kea-admin db-init failed" >&2; cat "$WORK/kea-admin.log" >&2; exit 1; }
        lease_db='{ "type": "postgresql", "name": "bench", "host": "'"$PGDIR"'", "user": "metal6" }'
      else
        lease_db='{ "type": "memfile", "persist": true, "name": "'"$WORK"'/state/leases6.csv", "lfc-interval": 0 }'
      fi
      cat >"$WORK/state/kea-dhcp6.conf" <<JSON
{ "Dhcp6": {
    "data-directory": "$WORK/state",
    "server-id": { "type": "LL", "persist": false },
    "multi-threading": { "enable-multi-threading": $mt },
    "interfaces-config": { "interfaces": [ "m6s0/fd00:6d:1::1" ] },
    "lease-database": $lease_db,
    "preferred-lifetime": 3600, "valid-lifetime": 7200, "renew-timer": 1800, "rebind-timer": 2880,
    "subnet6": [ { "id": 1, "subnet": "fd00:6d:1::/64", "interface": "m6s0",
                   "pools": [ { "pool": "fd00:6d:1::1:0 - fd00:6d:1::1:ffff" } ] } ],
    "loggers": [ { "name": "kea-dhcp6", "severity": "WARN", "output_options": [ { "output": "$WORK/state/kea.log" } ] } ]
} }
JSON
      KEA_LOCKFILE_DIR="$WORK/state" KEA_PIDFILE_DIR="$WORK/state" \
        ip netns exec "$SRV" taskset -c 0 kea-dhcp6 -c "$WORK/state/kea-dhcp6.conf" >"$WORK/server.log" 2>&1 & disown
      ;;
  esac
  for _ in $(seq 100); do
    SERVER_PID=$(ip netns exec "$SRV" ss -Hlunp 'sport = :547' | { grep -o 'pid=[0-9]*' || true; } | head -1 | cut -d= -f2)
    SERVER_PIDS=$SERVER_PID
    if [[ $server == metal6-pg2* && -n $SERVER_PID ]]; then
      # The CPU column counts both servers.
      p2=$(ip netns exec "$SRV2" ss -Hlunp 'sport = :547' | { grep -o 'pid=[0-9]*' || true; } | head -1 | cut -d= -f2)
      [[ -n $p2 ]] || { SERVER_PID=; sleep 0.1; continue; }
      SERVER_PIDS="$SERVER_PID $p2"
    fi
    [[ -n $SERVER_PID ]] && return 0
    sleep 0.1
  done
  echo "bench: $server did not start" >&2; cat "$WORK/server.log" >&2; exit 1
}

# CPU seconds (user + system, all threads) the processes PIDS... have used so far, together.
cpu_of() {
  local f=() p
  for p in "$@"; do f+=("/proc/$p/stat"); done
  awk -v hz="$(getconf CLK_TCK)" '{ t += $14 + $15 } END { printf "%.2f", t / hz }' "${f[@]}"
}
rcvbuf_errors() { ip netns exec "$1" awk '$1 == "Udp6RcvbufErrors" { print $2 }' /proc/net/snmp6; }

# One step → STEP_RESULT="offered completed drops cpu server_rcvbuf generator_rcvbuf".
step() {
  local server=$1 mode=$2 rate=$3 relay=() c0 c1 out
  [[ $mode == relayed ]] && relay=(-A 1)
  setup_link "$( [[ $server == metal6-pg2* ]] && echo 2 || echo 1)"
  start_server "$server"
  # shellcheck disable=SC2086 # one or two pids
  c0=$(cpu_of $SERVER_PIDS)
  sysctl -qw net.core.rmem_default=4194304
  ip netns exec "$CLI" taskset -c 1 timeout $((STEP + 30)) perfdhcp -6 -g single -l m6c0 "${relay[@]}" \
    -r "$rate" -p "$STEP" -W 1000000 -R "$CLIENTS" >"$WORK/perf.out" 2>&1 || true
  sysctl -qw net.core.rmem_default="$RMEM_DEFAULT"
  # shellcheck disable=SC2086
  c1=$(cpu_of $SERVER_PIDS)
  out=$(awk -v step="$STEP" -v cpu="$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" '
    /^sent packets:/ { sent[++s] = $3 }
    /^received packets:/ { recv[++r] = $3 }
    /^drops:/ { drops += $2 }
    END { printf "%.0f %.0f %d %.2f", sent[1] / step, recv[2] / step, drops, cpu }' "$WORK/perf.out")
  STEP_RESULT="$out $(rcvbuf_errors "$SRV") $(rcvbuf_errors "$CLI")"
  teardown_link
  [[ $out == "0 0 0 "* ]] && { echo "bench: perfdhcp ran no exchange:" >&2; cat "$WORK/perf.out" >&2; exit 1; }
  return 0
}

declare -A CLEAN CPU_AT CEILING_HIT GEN_LIMITED
GEN_CEILING=0
log() { printf '  %-7s %-8s %6s/s offered %6s completed %5s drops  CPU %5ss  lost in server socket %s, generator socket %s\n' "$@"; }

# A step, logged; one with drops in the server's socket or in perfdhcp's counts is run once
# more (RETRY=0: never) and the better of the two kept. The machines are noisy: a neighbour's
# burst can cost any server a step, and this is applied to every server alike.
try_step() {
  local server=$1 mode=$2 rate=$3 first= tries=0 offered completed drops cpu srv gen d1
  while :; do
    step "$server" "$mode" "$rate"
    read -r offered completed drops cpu srv gen <<<"$STEP_RESULT"
    log "$server" "$mode" "$offered" "$completed" "$drops" "$cpu" "$srv" "$gen"
    (( drops == 0 )) && return 0
    (( tries >= RETRY )) && break
    tries=$((tries + 1)); first=$STEP_RESULT
    echo "    (drops: once more at $rate/s)"
  done
  # Every try dropped: keep the one with fewer drops (the ramp then tells the generator's
  # losses from the server's).
  if [[ -n $first ]]; then
    read -r _ _ d1 _ <<<"$first"
    (( d1 < drops )) && STEP_RESULT=$first
  fi
  return 0
}

ramp() {
  local server=$1 mode=$2 lo=0 lo_rate=0 hi=0 offered completed drops cpu srv gen rates=$RATES
  [[ $server == *-pg* ]] && rates=$PG_RATES
  for rate in $rates; do
    try_step "$server" "$mode" "$rate"
    read -r offered completed drops cpu srv gen <<<"$STEP_RESULT"
    (( offered > GEN_CEILING )) && GEN_CEILING=$offered
    [[ $mode == direct ]] && CPU_AT[$server,$rate]="$completed $cpu $drops"
    # Every drop lost in the generator's own socket, none in the server's: the generator's
    # limit, not the server's.
    if (( drops > 0 && srv == 0 && gen >= drops )); then GEN_LIMITED[$server,$mode]=$offered; break; fi
    if (( drops > 0 )); then hi=$rate; break; fi
    lo=$offered; lo_rate=$rate
    # The generator could not offer the rate asked for: its ceiling, not the server's.
    if (( offered * 100 < rate * 97 )); then CEILING_HIT[$server,$mode]=1; break; fi
  done
  # No drop at the highest rate tried, or drops only in the generator's socket: the server's
  # own limit is above it.
  (( hi == 0 )) && CEILING_HIT[$server,$mode]=1
  if (( hi > 0 )); then
    for _ in $(seq "$BISECT"); do
      local mid=$(( (lo_rate + hi) / 2 / 250 * 250 ))
      (( mid <= lo_rate )) && break
      try_step "$server" "$mode" "$mid"
      read -r offered completed drops cpu srv gen <<<"$STEP_RESULT"
      if (( drops > 0 )); then hi=$mid; else lo_rate=$mid; lo=$offered; fi
    done
  fi
  CLEAN[$server,$mode]=$lo
}

echo "bench-dhcp: perfdhcp -6, ${STEP} s steps, ${CLIENTS} distinct clients, pool of 65,536; rates: $RATES"
echo "  (on PostgreSQL: $PG_RATES)"
for mode in $MODES; do
  for server in $SERVERS; do ramp "$server" "$mode"; done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
clean_cell() {
  local v=${CLEAN[$1,$2]:-0}
  [[ -n ${CEILING_HIT[$1,$2]:-} ]] && v="${v}+"
  echo "$v"
}
best_kea() {
  local best=0 v
  for s in $SERVERS; do
    [[ $s == kea || $s == kea-mt ]] || continue
    v=${CLEAN[$s,$1]:-0}; (( v > best )) && best=$v
  done
  echo "$best"
}

printf '\n%-44s' ""; for s in $SERVERS; do printf ' %10s' "$s"; done; echo
for mode in $MODES; do
  printf '%-44s' "clean rate (0 % drops), $mode, exchanges/s"
  for s in $SERVERS; do printf ' %10s' "$(clean_cell "$s" "$mode")"; done; echo
done
echo "  (+: clean up to the last rate tried, or the next step lost packets only in the generator's"
echo "   own socket: the server's limit is higher)"
for key in "${!GEN_LIMITED[@]}"; do
  echo "  ${key/,/ }: at ${GEN_LIMITED[$key]}/s offered every drop was in the generator's socket"
done
if [[ " $SERVERS " == *" metal6 "* ]]; then
  printf '\n%-52s %10s %10s %8s\n' "" "metal6" "best Kea" "ratio"
  for mode in $MODES; do
    m=${CLEAN[metal6,$mode]:-0}; k=$(best_kea "$mode")
    printf '%-52s %10s %10s %8s\n' "clean rate (0 % drops), $mode" "$m" "$k" "$(ratio "$m" "$k")"
  done
fi
printf '%-52s %10s\n' "generator ceiling (most perfdhcp offered, /s)" "$GEN_CEILING"
if [[ " $SERVERS " == *" metal6-pg "* && " $SERVERS " == *" kea-pg "* ]]; then
  printf '\n%-52s %10s %10s %8s\n' "" "metal6-pg" "kea-pg" "ratio"
  for mode in $MODES; do
    m=${CLEAN[metal6-pg,$mode]:-0}; k=${CLEAN[kea-pg,$mode]:-0}
    printf '%-52s %10s %10s %8s\n' "clean rate on PostgreSQL (0 % drops), $mode" "$m" "$k" "$(ratio "$m" "$k")"
  done
fi
if [[ " $SERVERS " == *" metal6-pg "* && " $SERVERS " == *" metal6-pg2 "* ]]; then
  printf '\n%-52s %10s %10s %8s\n' "" "2 servers" "1 server" "ratio"
  for mode in $MODES; do
    two=${CLEAN[metal6-pg2,$mode]:-0}; one=${CLEAN[metal6-pg,$mode]:-0}
    printf '%-52s %10s %10s %8s\n' "clean rate on one PostgreSQL (0 % drops), $mode" "$two" "$one" "$(ratio "$two" "$one")"
  done
fi
if [[ " $SERVERS " == *" metal6-pg-cap "* && " $SERVERS " == *" metal6-pg2-cap "* ]]; then
  printf '\n%-52s %10s %10s %8s\n' "" "2 servers" "1 server" "ratio"
  for mode in $MODES; do
    two=${CLEAN[metal6-pg2-cap,$mode]:-0}; one=${CLEAN[metal6-pg-cap,$mode]:-0}
    printf '%-52s %10s %10s %8s\n' "each server capped at $CAP_CPU CPU, one PostgreSQL, $mode" "$two" "$one" "$(ratio "$two" "$one")"
  done
  echo "  (capped: each server on a host of its own size; uncapped: both servers and PostgreSQL share CPU 0)"
fi

# Cost per exchange: at the highest ramp rate metal6 and a Kea both completed cleanly (direct),
# against the Kea that spent the least CPU there.
eff() { read -r c cpu d <<<"${CPU_AT[$1,$2]:-0 0 1}"; (( d == 0 )) || { echo 0; return; }
  awk -v c="$c" -v cpu="$cpu" -v t="$STEP" 'BEGIN { if (cpu > 0) printf "%.0f", c * t / cpu; else print 0 }'; }
best_rate=0 best_m=0 best_k=0 best_name=-
for rate in $RATES; do
  m=$(eff metal6 "$rate"); (( m > 0 )) || continue
  k=0 kname=-
  for s in $SERVERS; do [[ $s == kea || $s == kea-mt ]] || continue; v=$(eff "$s" "$rate"); (( v > k )) && { k=$v; kname=$s; }; done
  (( k > 0 )) && { best_rate=$rate; best_m=$m; best_k=$k; best_name=$kname; }
done
if (( best_rate > 0 )); then
  printf '%-52s %10s %10s %8s\n' "exchanges per server CPU-second (direct, $best_rate/s)" "$best_m" "$best_k" "$(ratio "$best_m" "$best_k")"
  echo "  (Kea there: $best_name)"
fi
printf '%-52s %10s %10s\n' "durability before a Reply" "fdatasync" "none (memfile appends)"
echo "targets: metal6 clean up to the generator's ceiling; clean rate >= 2x the best Kea where the"
echo "generator can offer that much; exchanges per server CPU-second >= 2x Kea; on PostgreSQL,"
echo "metal6 >= 2x Kea, and two servers >= one (on hosts of their own: the capped line)."
