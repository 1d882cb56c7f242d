#!/usr/bin/env bash
# One command from a fresh Debian machine to a running demo: installs what
# is missing, builds the release binary and serves a generated data set.
# Extra arguments go to `basedata demo` (e.g. --persons 1000000).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cargo build --release --locked --bin basedata
exec "${CARGO_TARGET_DIR:-target}/release/basedata" demo "$@"
