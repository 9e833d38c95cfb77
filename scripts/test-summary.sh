#!/usr/bin/env bash
# Sums cargo's per-binary "test result:" lines into one closing line, so the end of a run says
# how many tests ran in all (cargo's own last line is often a doc-test binary with 0 tests).
set -euo pipefail
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i) ~ /^passed;?$/) p += $(i-1);
         if ($(i) ~ /^failed;?$/) f += $(i-1);
         if ($(i) ~ /^ignored;?$/) s += $(i-1);
       }
     }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s; if (p == 0 || f > 0) exit 1 }' "$1"
