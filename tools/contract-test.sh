#!/usr/bin/env bash
# Contract test: schemathesis (from PyPI) reads the running server's own
# /openapi.json and drives every operation with generated requests,
# checking that no answer is a 5xx and every answer matches the document
# (status code, content type, body schema). The two NDJSON-bodied
# operations (batch comparison and job submission) are left to the
# end-to-end tests, since schemathesis cannot generate NDJSON bodies.
# Bounded in time:
#   tools/contract-test.sh [SECONDS]   (default 60)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
max_time="${1:-60}"
venv="$BASEDATA_VENV"
venv_install "schemathesis==4.32.5" schemathesis
bin="${CARGO_TARGET_DIR:-target}/release/basedata"
[ -x "$bin" ] || cargo build --release --locked --bin basedata

dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
token="contract-test-token-0001"
strict="contract-test-strict-0001"
cat > "$dir/basedata.toml" <<TOML
[[departments]]
id = "gongan"
roles = ["provider", "consumer", "auditor", "admin"]
token = "$token"

# A department that may state only catalogued purposes of its list.
[[departments]]
id = "yibao"
roles = ["consumer"]
token = "$strict"
purposes = ["identity_check"]
TOML
"$bin" serve --data "$dir/data" --config "$dir/basedata.toml" --listen "127.0.0.1:$port" 2>"$dir/server.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
# Records to look up, so that success paths are exercised too: one by a
# citizen ID number, one by a passport number (id_type).
curl -fsS -X POST "http://127.0.0.1:$port/v1/datasets/hukou/updates" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/x-ndjson' \
  --data-binary '{"key":"11010519491231002X","version":1,"fields":{"name":"张三","gender":"2","birth_date":"1949-12-31","status":"normal"}}' >/dev/null
curl -fsS -X POST "http://127.0.0.1:$port/v1/datasets/residence_permit/updates" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/x-ndjson' \
  --data-binary '{"key":"E12345678","id_type":"passport","version":1,"fields":{"name":"SMITH JOHN"}}' >/dev/null

# The passport holder by its document type, before the generated requests:
# the key check, the lookup and a refused type of another subject.
expect_as() { # expect_as TOKEN PURPOSE STATUS PATH SUBSTRING
  local got
  got="$(curl -sS -o "$dir/body" -w '%{http_code} %{content_type}' "http://127.0.0.1:$port$4" \
    -H "Authorization: Bearer $1" -H "X-Purpose: $2")"
  if [ "${got%% *}" != "$3" ] || ! grep -q -- "$5" "$dir/body"; then
    echo "GET $4 as ${1%%-*}…: expected $3 with $5, got $got: $(head -c 300 "$dir/body")" >&2
    exit 1
  fi
  content_type="${got#* }"
}
expect() { expect_as "$token" contract-test "$@"; }
expect 200 '/v1/keys/person/e12345678?id_type=passport' '"normalized":"E12345678"'
expect 200 '/v1/persons/E12345678?id_type=passport' '"id_type":"passport"'
expect 400 '/v1/persons/E12345678?id_type=business_licence' '"invalid_value"'
expect 400 '/v1/persons/E12345678' '"invalid_key"'

# A strict department: its catalogued purpose is served, any other refused.
expect_as "$strict" identity_check 200 '/v1/persons/11010519491231002X?datasets=hukou' '"hukou"'
expect_as "$strict" 'identity_check; counter 7' 200 '/v1/persons/11010519491231002X?datasets=hukou' '"hukou"'
expect_as "$strict" tax_administration 403 '/v1/persons/11010519491231002X' '"purpose_not_allowed"'
expect_as "$strict" 'free text' 403 '/v1/persons/11010519491231002X' '"purpose_not_allowed"'
# The yearly report, as figures and as the document.
expect 200 '/v1/reports/annual' '"departments"'
expect 200 '/v1/reports/annual?format=html' '年度政务信息共享情况报告'
case "$content_type" in text/html*) ;; *) echo "the yearly report's document came as $content_type" >&2; exit 1 ;; esac
expect 400 '/v1/reports/annual?year=1999' '"invalid_value"'

# One worker: with two threads, hypothesis parsing lambdas' sources at once
# now and then trips Debian Python 3.11's AST recursion check
# ("AST constructor recursion depth mismatch"), an error of the tool that
# failed the run.
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  -H "Authorization: Bearer $token" -H "X-Purpose: contract-test" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path /v1/verify/batch --exclude-path /v1/jobs \
  --max-time "$max_time" --workers 1 --seed 20261122 --no-color --request-timeout 65
status=$?
if grep -q '"level":"ERROR"' "$dir/server.log"; then
  echo "server logged errors during the contract test:" >&2
  grep '"level":"ERROR"' "$dir/server.log" | head -5 >&2
  exit 1
fi
exit $status
