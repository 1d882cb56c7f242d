#!/usr/bin/env bash
# Installs what a build needs on a Debian machine and points ./target at a
# build cache outside the checkout, so a fresh clone on the same machine
# reuses the (slow, C++) RocksDB build. Sourced by demo.sh and test.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

apt_install() { # apt_install PACKAGE...: installs those of them that are missing
  local need_pkgs=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
  done
  if ((${#need_pkgs[@]})); then
    echo "installing ${need_pkgs[*]} ..." >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  fi
}
apt_install libclang-dev clang build-essential pkg-config curl python3 python3-venv

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "error: cargo (Rust 1.85 or newer) is required" >&2; exit 1; }

# The build cache lives outside the clone (override with BASEDATA_BUILD_CACHE).
cache="${BASEDATA_BUILD_CACHE:-/var/tmp/basedata-target}"
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ ! -e target ]; then
  mkdir -p "$cache"
  ln -s "$cache" target
fi

# Python tools of the test suite (schemathesis, the NATS server of cluster
# mode) live in one virtualenv outside the clone, reused between runs.
export BASEDATA_VENV="${BASEDATA_VENV:-/var/tmp/basedata-venv}"
venv_install() { # venv_install PACKAGE==VERSION EXECUTABLE
  if [ ! -x "$BASEDATA_VENV/bin/$2" ]; then
    [ -x "$BASEDATA_VENV/bin/pip" ] || python3 -m venv "$BASEDATA_VENV"
    "$BASEDATA_VENV/bin/pip" install -q "$1"
  fi
}
