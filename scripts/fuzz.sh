#!/usr/bin/env bash
# The cargo-fuzz targets under fuzz/ (`make fuzz`, `make fuzz-smoke`, `make fuzz-merge`,
# `make fuzz-replay`).
#
#   scripts/fuzz.sh run     every target for FUZZ_SECONDS, continuing the working corpora
#                           kept in fuzz/target/corpus/ (what long runs found stays found)
#   scripts/fuzz.sh smoke   every target for FUZZ_SECONDS from the committed seeds alone, in a
#                           throw-away working corpus: the same short run on every machine
#   scripts/fuzz.sh merge   adds to the committed seeds (fuzz/corpus/TARGET/) the inputs of
#                           the working corpora that reach code the seeds do not
#   scripts/fuzz.sh replay  runs every input of the working corpus and the seeds once under
#                           AddressSanitizer: the check after long runs without a sanitizer
#
# Environment: FUZZ_TARGETS (default: all), FUZZ_SECONDS (60), FUZZ_RUNS (also stop after this
# many executions), FUZZ_JOBS (run: processes per target sharing its working corpus; 1),
# FUZZ_SANITIZER (address or none; address), FUZZ_UNIT_TIMEOUT (seconds one input may take;
# 25), FUZZ_TOOLCHAIN (nightly). Builds once (`cargo fuzz build`: release, debug assertions,
# AddressSanitizer unless FUZZ_SANITIZER=none, which builds into fuzz/target/nosan/), then runs
# each target; any finding — a panic, a sanitizer report, a slow input, 2 GiB of memory —
# fails the run after every target had its turn. The last lines sum up:
# `fuzz: TARGET N executions, 0 findings`. Crashing inputs are in fuzz/artifacts/TARGET/;
# reproduce one with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…`.
#
# Without a sanitizer a target runs 4-5 times faster (the inventory: ~90 → ~475 inputs/s on
# its working corpus); it still finds every panic, failed assertion, overflow and slow input,
# but not a memory error in `unsafe` code (ours has none; the parsers' dependencies have some).
# Long runs go without it and `replay` then runs everything they kept under ASan: the corpus
# holds an input for every coverage feature they reached.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
targets=${FUZZ_TARGETS:-dhcp6_decode_decide ra_rs tftp_request http_head inventory tle redfish_json}
jobs=${FUZZ_JOBS:-1}
sanitizer=${FUZZ_SANITIZER:-address}
seconds=${FUZZ_SECONDS:-60}
unit_timeout=${FUZZ_UNIT_TIMEOUT:-25}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
logs=fuzz/target/logs

# Longest input per target: a UDP datagram or a request head for the network parsers (the
# HTTP fast path itself stops reading at 16 KiB), a generous file for the operators' inputs.
max_len() {
  case $1 in
    dhcp6_decode_decide | ra_rs | tftp_request | http_head) echo 65535 ;;
    inventory) echo 65536 ;;
    tle) echo 16384 ;;
    redfish_json) echo 262144 ;;
    *) echo 65535 ;;
  esac
}

case $mode in
  run | smoke | merge | replay) ;;
  *) echo "usage: $0 run|smoke|merge|replay" >&2; exit 2 ;;
esac
case $sanitizer in
  address) build_dir=fuzz/target ;;
  none) build_dir=fuzz/target/nosan ;;
  *) echo "fuzz: FUZZ_SANITIZER is address or none, not $sanitizer" >&2; exit 2 ;;
esac
if [[ $mode == replay ]]; then
  sanitizer=address build_dir=fuzz/target
fi
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: FUZZ_JOBS is a positive number, not $jobs" >&2; exit 2; }

if ! grep -q "^$toolchain" <<<"$(rustup toolchain list)"; then
  echo "fuzz: the $toolchain toolchain is missing (cargo-fuzz needs nightly): rustup toolchain install $toolchain" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz
fi
cargo_fuzz=(cargo "+$toolchain" fuzz)

"${cargo_fuzz[@]}" build -s "$sanitizer" --target-dir "$build_dir"
bin_dir=$build_dir/$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')/release
mkdir -p "$logs"
# As `cargo fuzz run` sets it: Rust's generics trip ASan's one-definition-rule check.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0

if [[ $mode == merge ]]; then
  for t in $targets; do
    work=fuzz/target/corpus/$t
    [[ -d $work ]] || { echo "fuzz: $t has no working corpus (run make fuzz first)"; continue; }
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    "$bin_dir/$t" "fuzz/corpus/$t" "$work" -merge=1 -max_len="$(max_len "$t")" \
      -rss_limit_mb=2048 -timeout="$unit_timeout" >"$logs/$t.merge.log" 2>&1 \
      || { echo "fuzz: merging $t failed, see $logs/$t.merge.log"; exit 1; }
    echo "fuzz: $t $before -> $(find "fuzz/corpus/$t" -type f | wc -l) seed files"
  done
  exit 0
fi

if [[ $mode == replay ]]; then
  failed=0
  for t in $targets; do
    mkdir -p "fuzz/artifacts/$t"
    dirs=("fuzz/corpus/$t")
    [[ -d fuzz/target/corpus/$t ]] && dirs+=("fuzz/target/corpus/$t")
    n=$(find "${dirs[@]}" -type f | wc -l)
    # -runs=0: read (and so run) every input of the directories once, fuzz nothing.
    rc=0
    "$bin_dir/$t" "${dirs[@]}" -runs=0 -max_len="$(max_len "$t")" -rss_limit_mb=2048 \
      -timeout="$unit_timeout" -artifact_prefix="fuzz/artifacts/$t/" >"$logs/$t.replay.log" 2>&1 || rc=$?
    if [[ $rc -eq 0 ]]; then
      echo "fuzz: $t $n inputs replayed under AddressSanitizer, 0 findings"
    else
      failed=1
      tail -n 40 "$logs/$t.replay.log"
      echo "fuzz: $t replay failed (exit $rc), see $logs/$t.replay.log and fuzz/artifacts/$t/"
    fi
  done
  exit "$failed"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
failed=0
for t in $targets; do
  if [[ $mode == smoke ]]; then
    work=$scratch/$t
  else
    work=fuzz/target/corpus/$t
  fi
  mkdir -p "$work" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  # Artifacts are named after their content: list them to tell this run's from older ones.
  find "fuzz/artifacts/$t" -type f | sort >"$scratch/$t.before"
  args=(-max_total_time="$seconds" -max_len="$(max_len "$t")" -rss_limit_mb=2048
    -timeout="$unit_timeout" -print_final_stats=1)
  if [[ -n ${FUZZ_RUNS:-} ]]; then
    args+=(-runs="$FUZZ_RUNS")
  fi
  echo "fuzz: $t for ${seconds}s, $jobs process(es), sanitizer $sanitizer (log: $logs/$t.log)"
  # The working corpus first: libFuzzer adds what it finds to the first directory only, so
  # the committed seeds stay as they are. Several processes share it (each rereads it).
  pids=() job_logs=()
  for ((j = 1; j <= jobs; j++)); do
    log=$logs/$t.log
    ((jobs > 1)) && log=$logs/$t.$j.log
    job_logs+=("$log")
    "$bin_dir/$t" "$work" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" "${args[@]}" >"$log" 2>&1 &
    pids+=($!)
  done
  # The exit status of each job; the log shown on failure is the failed job's.
  rc=0 failed_log=$logs/$t.log
  for j in "${!pids[@]}"; do
    wait "${pids[$j]}" || { rc=$?; failed_log=${job_logs[$j]}; }
  done
  if ((jobs > 1)); then
    cat "${job_logs[@]}" >"$logs/$t.log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | awk '{ n += $1 } END { print n + 0 }')
  new=$(find "fuzz/artifacts/$t" -type f | sort | comm -13 "$scratch/$t.before" -)
  if [[ $rc -eq 0 ]]; then
    summary+=("fuzz: $t ${execs:-?} executions, 0 findings")
    continue
  fi
  failed=1
  tail -n 60 "$failed_log"
  if [[ -n $new ]]; then
    summary+=("fuzz: $t ${execs:-?} executions, 1 finding: $(paste -sd ' ' <<<"$new")")
  else
    summary+=("fuzz: $t ${execs:-?} executions, failed (exit $rc) without an artifact: see $logs/$t.log")
  fi
done

printf '%s\n' "${summary[@]}"
exit "$failed"
