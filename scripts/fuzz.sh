#!/usr/bin/env bash
# The cargo-fuzz targets under fuzz/ (`make fuzz`, `make fuzz-smoke`, `make fuzz-merge`).
#
#   scripts/fuzz.sh run     every target for FUZZ_SECONDS, continuing the working corpora
#                           kept in fuzz/target/corpus/ (what long runs found stays found)
#   scripts/fuzz.sh smoke   every target for FUZZ_SECONDS from the committed seeds alone, in a
#                           throw-away working corpus: the same short run on every machine
#   scripts/fuzz.sh merge   adds to the committed seeds (fuzz/corpus/TARGET/) the inputs of
#                           the working corpora that reach code the seeds do not
#
# Environment: FUZZ_TARGETS (default: all), FUZZ_SECONDS (60), FUZZ_RUNS (also stop after this
# many executions), FUZZ_UNIT_TIMEOUT (seconds one input may take; 25), FUZZ_TOOLCHAIN
# (nightly). Builds once (`cargo fuzz build`: release, debug assertions, AddressSanitizer),
# then runs each target; any finding — a panic, a sanitizer report, a slow input, 2 GiB of
# memory — fails the run after every target had its turn. The last lines sum up:
# `fuzz: TARGET N executions, 0 findings`. Crashing inputs are in fuzz/artifacts/TARGET/;
# reproduce one with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…`.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-run}
targets=${FUZZ_TARGETS:-dhcp6_decode_decide ra_rs tftp_request http_head inventory tle redfish_json}
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
  run | smoke | merge) ;;
  *) echo "usage: $0 run|smoke|merge" >&2; exit 2 ;;
esac

if ! grep -q "^$toolchain" <<<"$(rustup toolchain list)"; then
  echo "fuzz: the $toolchain toolchain is missing (cargo-fuzz needs nightly): rustup toolchain install $toolchain" >&2
  exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz
fi
cargo_fuzz=(cargo "+$toolchain" fuzz)

"${cargo_fuzz[@]}" build
mkdir -p "$logs"

if [[ $mode == merge ]]; then
  for t in $targets; do
    work=fuzz/target/corpus/$t
    [[ -d $work ]] || { echo "fuzz: $t has no working corpus (run make fuzz first)"; continue; }
    before=$(find "fuzz/corpus/$t" -type f | wc -l)
    "${cargo_fuzz[@]}" run "$t" "fuzz/corpus/$t" "$work" -- -merge=1 -max_len="$(max_len "$t")" \
      -rss_limit_mb=2048 -timeout="$unit_timeout" >"$logs/$t.merge.log" 2>&1 \
      || { echo "fuzz: merging $t failed, see $logs/$t.merge.log"; exit 1; }
    echo "fuzz: $t $before -> $(find "fuzz/corpus/$t" -type f | wc -l) seed files"
  done
  exit 0
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
  echo "fuzz: $t for ${seconds}s (log: $logs/$t.log)"
  # The working corpus first: libFuzzer adds what it finds to the first directory only, so
  # the committed seeds stay as they are.
  if "${cargo_fuzz[@]}" run "$t" "$work" "fuzz/corpus/$t" -- "${args[@]}" >"$logs/$t.log" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
  new=$(find "fuzz/artifacts/$t" -type f | sort | comm -13 "$scratch/$t.before" -)
  if [[ $rc -eq 0 ]]; then
    summary+=("fuzz: $t ${execs:-?} executions, 0 findings")
    continue
  fi
  failed=1
  tail -n 60 "$logs/$t.log"
  if [[ -n $new ]]; then
    summary+=("fuzz: $t ${execs:-?} executions, 1 finding: $(paste -sd ' ' <<<"$new")")
  else
    summary+=("fuzz: $t ${execs:-?} executions, failed (exit $rc) without an artifact: see $logs/$t.log")
  fi
done

printf '%s\n' "${summary[@]}"
exit "$failed"
