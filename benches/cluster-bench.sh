#!/usr/bin/env bash
# Cluster mode, measured side by side in one run: durable ingest (batches of
# 1,000 updates) and audited verification on
#   - one node in embedded mode (no cluster: the baseline),
#   - one node in cluster mode, and
#   - three nodes in cluster mode,
# the cluster ones on the same three-server NATS JetStream cluster (stream
# replicas 3, tools/cluster.sh). Every process shares this machine's cores.
# Also sampled every half second during ingest: the slowest node's apply
# lag (messages of the stream it has not applied) and the stream's largest
# replica lag (operations a NATS replica is behind its leader), and after
# ingest the time until every node has applied everything.
#
#   benches/cluster-bench.sh [PERSONS] [VERIFY_SECONDS]   (default 200000, 10)
#   NATS_SYNC=2m benches/cluster-bench.sh …    JetStream's default sync instead of always
#   BASEDATA_BENCH_BIN=/path/to/basedata benches/cluster-bench.sh …   another build
#
# Prints a Markdown table; the raw loadgen results go to WORK/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
persons="${1:-200000}"
seconds="${2:-10}"
cargo build --release --locked --bin basedata --bin loadgen >&2
# BASEDATA_BENCH_BIN runs another build of the server (an A/B comparison).
bin="${BASEDATA_BENCH_BIN:-$PWD/target/release/basedata}"
loadgen="$PWD/target/release/loadgen"
work="$(mktemp -d /var/tmp/cluster-bench.XXXXXX)"
export BASEDATA_BIN="$bin"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for d in "$work"/c*; do [ -d "$d" ] && bash tools/cluster.sh stop "$d" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT

echo "[cluster-bench] generating $persons persons in $work" >&2
"$bin" gen --persons "$persons" --entities 0 --out "$work/gen" >/dev/null
hukou="$work/gen/hukou.ndjson"
python3 - "$hukou" "$work/rows.tsv" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        v = json.loads(line); fl = v["fields"]
        out.write(f'{v["key"]}\t{fl["name"]}\t{fl["birth_date"]}\t{fl.get("gender", "1")}\n')
PY
split -n l/3 -d "$hukou" "$work/part-"

field() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }
metric() { # metric PORT NAME-WITH-LABELS
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}' | head -1
}

# ingest PORTS... (one loadgen per node, each its share of the persons, run together)
ingest() {
  local n=$# i=0 outs=()
  local start; start="$(date +%s.%N)"
  for port in "$@"; do
    local input="$hukou"
    [ "$n" -gt 1 ] && input="$work/part-0$i"
    "$loadgen" --url "http://127.0.0.1:$port/v1/datasets/hukou/updates" -H "Authorization: Bearer $TOKEN_GONGAN" \
      -H "Content-Type: application/x-ndjson" --lines "$input" --lines-per-request 1000 -c $((6 / n > 1 ? 6 / n : 2)) -d 600 \
      --label "ingest $label node $((i + 1))" >"$work/ingest-$i.json" &
    outs+=($!)
    i=$((i + 1))
  done
  for p in "${outs[@]}"; do wait "$p"; done
  local end; end="$(date +%s.%N)"
  cat "$work"/ingest-*.json >>"$work/results.jsonl"
  for f in "$work"/ingest-*.json; do
    [ "$(field 'd["non_2xx"] + d["io_errors"]' <"$f")" = "0" ] || { echo "error: ingest requests failed: $(cat "$f")" >&2; exit 1; }
  done
  rm -f "$work"/ingest-*.json
  # Every line is sent once: the rate is the persons over the wall time.
  python3 -c "print(round($persons / ($end - $start)))"
}

# verify PORTS... (one loadgen per node, 48 connections in all)
verify() {
  local n=$# i=0 outs=()
  for port in "$@"; do
    "$loadgen" --url "http://127.0.0.1:$port/v1/persons/{0}/verify" -H "Authorization: Bearer $TOKEN_COUNTER" \
      -H "X-Purpose: benchmark" -H "Content-Type: application/json" --keys "$work/rows.tsv" \
      --body '{"dataset":"hukou","fields":{"name":"{1}","birth_date":"{2}"}}' \
      -c $((48 / n)) --warmup 2 -d "$seconds" --seed $((i + 1)) --label "verify $label node $((i + 1))" >"$work/verify-$i.json" &
    outs+=($!)
    i=$((i + 1))
  done
  for p in "${outs[@]}"; do wait "$p"; done
  cat "$work"/verify-*.json >>"$work/results.jsonl"
  local rps=0 p99=0
  for f in "$work"/verify-*.json; do
    rps="$(python3 -c "print($rps + $(field 'd["rps"]' <"$f"))")"
    p99="$(python3 -c "print(max($p99, $(field 'd["latency_us"]["p99"]' <"$f")))")"
  done
  rm -f "$work"/verify-*.json
  echo "$rps $p99"
}

# Samples the apply and replica lags of the nodes on PORTS until the file STOP exists.
sample_lag() {
  local stop="$1"; shift
  local apply=0 replica=0
  while [ ! -e "$stop" ]; do
    for port in "$@"; do
      local a r
      a="$(metric "$port" 'basedata_cluster{stat="lag"}')"; r="$(metric "$port" 'basedata_cluster{stat="replica_lag"}')"
      [ -n "$a" ] && [ "$a" -gt "$apply" ] && apply="$a"
      [ -n "$r" ] && [ "$r" -gt "$replica" ] && replica="$r"
    done
    sleep 0.5
  done
  echo "$apply $replica"
}

rows=()
run_case() { # run_case LABEL NODES(0 = embedded)
  label="$1"
  local nodes="$2" ports=()
  if [ "$nodes" -eq 0 ]; then
    local d="$work/embedded"; mkdir -p "$d"
    TOKEN_GONGAN="gongan-bench-token-0001"; TOKEN_COUNTER="counter-bench-token-001"
    printf '[[departments]]\nid = "gongan"\nroles = ["provider"]\ntoken = "%s"\n\n[[departments]]\nid = "c"\nroles = ["consumer"]\ntoken = "%s"\n' \
      "$TOKEN_GONGAN" "$TOKEN_COUNTER" >"$d/basedata.toml"
    local port; port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$bin" serve --data "$d/data" --config "$d/basedata.toml" --listen "127.0.0.1:$port" 2>"$d/server.log" &
    pids+=($!)
    until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do sleep 0.2; done
    ports=("$port")
  else
    local d="$work/c$nodes"
    bash tools/cluster.sh start "$d" "$nodes" >&2
    # shellcheck disable=SC1091
    source "$d/cluster.env"
    for i in $(seq 1 "$nodes"); do local v="NODE_PORT_$i"; ports+=("${!v}"); done
  fi
  echo "[cluster-bench] $label: ingest" >&2
  rm -f "$work/stop-sampling"
  sample_lag "$work/stop-sampling" "${ports[@]}" >"$work/lag.txt" &
  local sampler=$!
  local ups; ups="$(ingest "${ports[@]}")"
  # Until every node has applied the whole stream.
  local t0; t0="$(date +%s.%N)"
  local catchup="–"
  if [ "$nodes" -gt 0 ]; then
    for port in "${ports[@]}"; do
      until [ "$(metric "$port" 'basedata_cluster{stat="lag"}')" = "0" ] && \
            [ "$(metric "$port" 'basedata_dataset_records{dataset="hukou"}')" = "$persons" ]; do sleep 0.1; done
    done
    catchup="$(python3 -c "print(f'{$(date +%s.%N) - $t0:.2f} s')")"
  fi
  touch "$work/stop-sampling"; wait "$sampler"
  read -r apply_lag replica_lag <"$work/lag.txt"
  for port in "${ports[@]}"; do
    local held; held="$(metric "$port" 'basedata_dataset_records{dataset="hukou"}')"
    [ "$held" = "$persons" ] || { echo "error: node on $port holds $held of $persons persons" >&2; exit 1; }
  done
  echo "[cluster-bench] $label: verify" >&2
  local vr; vr="$(verify "${ports[@]}")"
  read -r vrps vp99 <<<"$vr"
  if [ "$nodes" -eq 0 ]; then apply_lag="–"; replica_lag="–"; fi
  rows+=("| $label | $ups | $apply_lag | $replica_lag | $catchup | $vrps | $(python3 -c "print(round($vp99 / 1000, 2))") |")
  if [ "$nodes" -eq 0 ]; then kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; else bash tools/cluster.sh stop "$work/c$nodes"; fi
}

run_case "embedded, 1 node (no cluster)" 0
run_case "cluster, 1 node" 1
run_case "cluster, 3 nodes" 3

echo
echo "NATS sync_interval: ${NATS_SYNC:-always}; $persons persons; $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); NATS $("${NATS_SERVER:-$BASEDATA_VENV/bin/nats-server}" --version 2>/dev/null || true)"
echo
echo "| mode | ingest, updates/s | max apply lag, messages | max replica lag, ops | all nodes applied after | verify, req/s | verify p99, ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
echo "raw results: $work/results.jsonl"
