#!/usr/bin/env bash
# An auditor's query (by default for one key, GET /v1/audit?key=…&limit=1; one every
# 20 ms over one keep-alive connection) while the store is busy: first
# beside back-to-back POST /v1/verify/batch of the store's rows (12 s),
# then beside closed-loop verifications (loadgen, 64 connections, 11 s).
# Prints the queries' latency, the batches' times and the verifications'
# rate. Every scan of the audit index reads the keys still in memory (the
# index's tail; before it, the live memtable, which each scan sorted), so
# this is what they cost an auditor.
#
#   benches/audit-beside-load.sh WORK                      this build
#   BASEDATA_BENCH_BIN=/path/to/basedata benches/audit-beside-load.sh WORK   another build
#
# WORK is a store kept by `target/release/http_bench --persons N --keep
# --work WORK` (its data, configuration and rows.tsv); each run works on a
# fresh copy of it (in WORK-audit), with an auditor department added to
# the copy's configuration. Bounded: each load stops by itself, and the
# server is stopped at the end. AUDIT_QUERY sets another query string for
# the auditor (default `key=KEY&limit=1`), e.g.
# `AUDIT_QUERY='department=shebao-counter&limit=1'` to read the department
# index, where every group of verifications adds a key.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:?WORK: a store kept by http_bench --keep}"
bin="${BASEDATA_BENCH_BIN:-$PWD/target/release/basedata}"
loadgen="$PWD/target/release/loadgen"
port=18191
counter='bench-counter-token-000000000'
auditor='bench-auditor-token-0000000000'
copy="$work-audit"
rm -rf "$copy"
mkdir -p "$copy"
cp -a "$work/data" "$copy/data"
cp "$work/basedata.toml" "$copy/basedata.toml"
[ -f "$work/data.key" ] && cp "$work/data.key" "$copy/data.key"
printf '\n[[departments]]\nid = "audit-office"\nroles = ["auditor"]\ntoken = "%s"\n' "$auditor" >> "$copy/basedata.toml"
batch="$copy/batch.ndjson"
python3 benches/batch-lines.py "$work/rows.tsv" 0 "$batch"
key="$(tail -1 "$work/rows.tsv" | cut -f1)"
query="${AUDIT_QUERY:-key=$key&limit=1}"

(cd "$copy" && exec "$bin" serve --data data --config basedata.toml --listen "127.0.0.1:$port" 2> server.log) &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break
  sleep 0.2
done
curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" || { echo "the server did not start: $copy/server.log" >&2; exit 1; }

probe() {
  python3 - "$port" "$query" "$auditor" "$1" <<'PY'
import http.client, sys, time
port, query, token, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
took, end = [], time.time() + seconds
while time.time() < end:
    t = time.perf_counter()
    conn.request("GET", f"/v1/audit?{query}", headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    body = r.read()
    took.append((time.perf_counter() - t) * 1000)
    if r.status != 200:
        sys.exit(f"audit query answered {r.status}: {body[:200]!r}")
    time.sleep(0.02)
took.sort()
at = lambda q: took[min(len(took) - 1, int(q * len(took)))]
print(f"{len(took)} queries: p50 {at(.5):.2f} ms, p90 {at(.9):.2f} ms, p99 {at(.99):.2f} ms, max {took[-1]:.2f} ms")
PY
}

echo "idle: $(probe 3)"
times="$copy/batch-times.txt"
: > "$times"
(
  end=$((SECONDS + 12))
  while [ $SECONDS -lt $end ]; do
    curl -sS --max-time 60 -X POST -T "$batch" -H "Authorization: Bearer $counter" -H 'X-Purpose: benchmark' \
      -H 'Content-Type: application/x-ndjson' "http://127.0.0.1:$port/v1/verify/batch" -o /dev/null -w '%{time_total}\n' >> "$times"
  done
) &
batches=$!
sleep 1
echo "beside batches of $(wc -l < "$batch") lines: $(probe 10)"
wait $batches
echo "  the batches took (s): $(tr '\n' ' ' < "$times")"
"$loadgen" --url "http://127.0.0.1:$port/v1/persons/{0}/verify" -H "Authorization: Bearer $counter" -H 'X-Purpose: benchmark' \
  -H 'Content-Type: application/json' --keys "$work/rows.tsv" \
  --body '{"dataset":"hukou","fields":{"name":"{1}","birth_date":"{2}"}}' -c 64 --warmup 1 -d 11 --threads 1 --label v > "$copy/loadgen.json" &
load=$!
sleep 1
echo "beside verifications: $(probe 10)"
wait $load
echo "  verifications: $(grep -o '"rps":[0-9.]*' "$copy/loadgen.json" | cut -d: -f2) req/s"
