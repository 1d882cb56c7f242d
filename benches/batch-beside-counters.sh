#!/usr/bin/env bash
# A counter's verifications while a back office's batch comparison runs:
# verifications at a fixed rate (loadgen, 64 connections, paced evenly)
# and, 3 s in, one POST /v1/verify/batch of LINES lines; prints the
# batch's time, the verifications' latency and the writer's longest group
# commit and largest group (/metrics).
#
#   benches/batch-beside-counters.sh WORK [LINES] [RATE] [LABEL]   (default 1000000, 2000)
#   BASEDATA_BENCH_BIN=/path/to/basedata benches/batch-beside-counters.sh …   another build
#
# WORK is a store kept by `target/release/http_bench --persons N --keep
# --work WORK` (its data, configuration and rows.tsv). The batch file is
# made once from rows.tsv (WORK/batch-LINES.ndjson): the persons in turn,
# every tenth line with a wrong birth date. Bounded: the load stops after
# 11 s, the server is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:?WORK: a store kept by http_bench --keep}"
lines="${2:-1000000}"
rate="${3:-2000}"
label="${4:-run}"
bin="${BASEDATA_BENCH_BIN:-$PWD/target/release/basedata}"
loadgen="$PWD/target/release/loadgen"
port=18190
token='bench-counter-token-000000000'
batch="$work/batch-$lines.ndjson"
if [ ! -s "$batch" ]; then
  python3 benches/batch-lines.py "$work/rows.tsv" "$lines" "$batch" 10
fi
out="$(mktemp -d /var/tmp/batch-beside.XXXXXX)"
"$bin" serve --data "$work/data" --config "$work/basedata.toml" --listen 127.0.0.1:$port >"$out/serve.log" 2>&1 &
server=$!
# Waited for, so that the next run finds the store unlocked.
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do curl -fs -o /dev/null http://127.0.0.1:$port/healthz && break; sleep 0.3; done
curl -fs -o /dev/null http://127.0.0.1:$port/healthz || { echo "the server did not start: $out/serve.log" >&2; exit 1; }
sleep 3
"$loadgen" --url "http://127.0.0.1:$port/v1/persons/{0}/verify" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $token" -H 'X-Purpose: benchmark' --keys "$work/rows.tsv" \
  --body '{"dataset":"hukou","fields":{"name":"{1}","birth_date":"{2}"}}' \
  -c 64 --warmup 1 -d 10 --rate "$rate" >"$out/loadgen.json" &
load=$!
sleep 3
t0=$(date +%s.%N)
curl -fsS -X POST -H "Authorization: Bearer $token" -H 'X-Purpose: benchmark' -H 'Content-Type: application/x-ndjson' \
  --data-binary @"$batch" http://127.0.0.1:$port/v1/verify/batch -o "$out/answers.ndjson"
t1=$(date +%s.%N)
wait $load
curl -fs -H "Authorization: Bearer $token" http://127.0.0.1:$port/metrics >"$out/metrics.txt"
python3 - "$label" "$t0" "$t1" "$out" "$lines" <<'PY'
import json, re, sys
label, t0, t1, out, lines = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
answered = sum(1 for _ in open(f"{out}/answers.ndjson", encoding="utf-8"))
lat = json.load(open(f"{out}/loadgen.json"))["latency_us"]
m = open(f"{out}/metrics.txt").read()
w = lambda s: int(re.search(r'basedata_writer\{stat="%s"\} (\d+)' % s, m).group(1))
ms = lambda us: f"{us / 1000:.1f}"
print(f"| {label} | {t1 - t0:.2f} s ({answered}/{lines} answered) | {ms(lat['p50'])} | {ms(lat['p90'])} | {ms(lat['p99'])} | "
      f"{ms(lat['max'])} | {ms(w('longest_commit_us'))} | {w('largest_group')} |")
PY
rm -rf "$out"
