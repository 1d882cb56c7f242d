#!/usr/bin/env bash
# Two server builds measured in alternated pairs on the same store, so that
# the machine's drift (which moves single runs by ±10 %) falls on both alike.
#
#   benches/alternate.sh STORE BIN_A BIN_B [ROUNDS] [HALF_RATE]
#
# STORE is a work directory kept by `http_bench --keep --work STORE` (its
# data directory, key file, configuration and rows.tsv). Each round, for
# each build: the store is copied afresh, the server started on it, and
# verification (`POST /v1/persons/{id}/verify`, 64 connections) measured
# closed loop for 10 s, then the minimal axum handler under the same load
# generator, then verification again at HALF_RATE req/s (default 28000,
# about half of the closed-loop rate on a 2-core machine). Prints one line
# per build and round: throughput, the ratio to the minimal handler, the
# server's CPU per request, and the half-rate percentiles.
set -euo pipefail
store=$(realpath "${1:?usage: alternate.sh STORE BIN_A BIN_B [ROUNDS] [HALF_RATE]}")
# Absolute: each server starts in its copy of the store.
bins=("$(realpath "${2:?}")" "$(realpath "${3:?}")")
rounds=${4:-3}
half=${5:-28000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
loadgen="$root/target/release/loadgen"
minimal="$root/target/release/minimal_axum"
[ -x "$loadgen" ] && [ -x "$minimal" ] || { echo "build first: cargo build --release --locked -p basedata-benches --bins" >&2; exit 2; }
work=$(mktemp -d "${TMPDIR:-/var/tmp}/alternate.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# CPU ticks (user + system) of process $1 so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_up() {
    for _ in $(seq 1 150); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.2
    done
    echo "no answer from $1" >&2
    exit 1
}

# A loadgen JSON result's field, e.g. `field F rps` or `field F latency_us.p99`.
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); [d:=d[k] for k in sys.argv[2].split('.')]; print(d)" "$1" "$2"; }

hz=$(getconf CLK_TCK)
for r in $(seq 1 "$rounds"); do
    for b in "${bins[@]}"; do
        rm -rf "$work/s"
        mkdir -p "$work/s"
        cp -r "$store/data" "$store/data.key" "$store/basedata.toml" "$store/rows.tsv" "$work/s/"
        # The copy's dirty pages written back during a run stall the
        # journal's syncs behind them (tens of milliseconds at p50).
        sync
        (cd "$work/s" && exec "$b" serve --data data --config basedata.toml --listen 127.0.0.1:18777 2>"$work/server.log") &
        sp=$!
        "$minimal" --listen 127.0.0.1:18778 --max-seconds 600 >/dev/null 2>&1 &
        mp=$!
        wait_up http://127.0.0.1:18777/readyz
        wait_up http://127.0.0.1:18778/
        body='{"dataset":"hukou","fields":{"name":"{1}","birth_date":"{2}"}}'
        common=(--keys "$work/s/rows.tsv" --body "$body" -c 64 --threads 1 --warmup 2 -d 10)
        verify=(--url 'http://127.0.0.1:18777/v1/persons/{0}/verify' -H 'Authorization: Bearer bench-counter-token-000000000'
            -H 'X-Purpose: benchmark' -H 'Content-Type: application/json' "${common[@]}")
        t0=$(ticks $sp)
        "$loadgen" "${verify[@]}" --label verify >"$work/v.json"
        t1=$(ticks $sp)
        "$loadgen" --url http://127.0.0.1:18778/ -H 'Content-Type: application/json' "${common[@]}" --label minimal >"$work/m.json"
        t2=$(ticks $sp)
        "$loadgen" "${verify[@]}" --rate "$half" --label half >"$work/h.json"
        t3=$(ticks $sp)
        kill $sp $mp
        wait $sp $mp 2>/dev/null || true
        v=$(field "$work/v.json" rps)
        m=$(field "$work/m.json" rps)
        python3 - "$r" "$b" "$v" "$m" "$((t1 - t0))" "$((t3 - t2))" "$hz" "$(field "$work/h.json" rps)" \
            "$(field "$work/h.json" latency_us.p50)" "$(field "$work/h.json" latency_us.p99)" "$(field "$work/h.json" latency_us.max)" <<'EOF'
import sys
r, b, v, m, tv, th, hz, half, p50, p99, mx = sys.argv[1:]
v, m, hz, half = float(v), float(m), float(hz), float(half)
# Both runs last 12 s (2 s warm-up at the same load, then 10 s measured).
cpu_v = int(tv) / hz / 12 / v * 1e6
# Per request answered at the fixed rate (a build that falls behind
# answers fewer than asked for).
cpu_h = int(th) / hz / 12 / half * 1e6
print(f"round {r} {b}: verification {v:,.0f} req/s, minimal {m:,.0f}, ratio {v / m:.3f}, "
      f"server {cpu_v:.1f} µs/req | answered {half:,.0f} req/s: p50 {int(p50) / 1000:.2f} p99 {int(p99) / 1000:.2f} "
      f"max {int(mx) / 1000:.1f} ms, server {cpu_h:.1f} µs/req")
EOF
    done
done
