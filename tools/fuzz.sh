#!/usr/bin/env bash
# Runs the cargo-fuzz targets of tests/fuzz (key parsing, update-line
# parsing, verification normalization, batch lines) on the stable toolchain, without
# sanitizers, each for SECONDS (default 600), one after the other.
#   tools/fuzz.sh [SECONDS] [TARGET ...]
# Corpora grow in $BASEDATA_FUZZ_CACHE/corpus (reused by later runs); the
# committed seeds in tests/fuzz/seeds start them. A crash stops the run
# with libFuzzer's report and the input under tests/fuzz/artifacts/.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

secs="${1:-600}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(keys update_line verify_normalize batch_lines)

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cache="${BASEDATA_FUZZ_CACHE:-/var/tmp/basedata-fuzz}"
export CARGO_TARGET_DIR="$cache/target"

for t in "${targets[@]}"; do
  mkdir -p "$cache/corpus/$t" "tests/fuzz/seeds/$t"
  echo "== fuzzing $t for ${secs}s" >&2
  cargo fuzz run --fuzz-dir tests/fuzz --sanitizer none --debug-assertions "$t" \
    "$cache/corpus/$t" "tests/fuzz/seeds/$t" -- -max_total_time="$secs" -print_final_stats=1
done
