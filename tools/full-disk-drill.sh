#!/usr/bin/env bash
# A full-disk drill: a server whose data directory is on a small tmpfs of
# its own; the disk is filled while a provider pushes updates, which are
# then answered 503 `unavailable` (and so are audited verifications whose
# uses cannot be recorded either), space is freed, and both go on by
# themselves, with no restart. A restart afterwards finds exactly what was
# acknowledged, and the audit chain and its indexes whole. It runs twice:
# on 1,100 MiB, where the journal's segments are prefilled (RocksDB's
# flush meets the full disk first), and on 400 MiB, too little for that
# (the journal's own allocation meets it first).
#
#   tools/full-disk-drill.sh [WORKDIR]
#
# WORKDIR (default: a new directory under /var/tmp, removed if the drill
# passes) holds the generated updates, the mount point and the server's
# log.
#
# Needs root (it mounts a tmpfs, and unmounts it at the end); where no
# tmpfs can be mounted it says so and exits 0 without running. Exits 1
# when the server does not behave as above. BASEDATA_BIN overrides the
# binary. Takes about a minute.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -z "${DRILL_MB:-}" ]; then
  for mb in 1100 400; do
    echo "== full-disk drill on $mb MiB"
    DRILL_MB=$mb bash "${BASH_SOURCE[0]}" "$@"
  done
  exit 0
fi
bin="${BASEDATA_BIN:-$here/../target/release/basedata}"
made=""
[ $# -ge 1 ] || made=1
work="${1:-$(mktemp -d /var/tmp/basedata-full-disk.XXXXXX)}"
mnt="$work/mnt"
mkdir -p "$mnt" "$work/gen"
# Prefilled journal segments need eight times their 64 MiB free.
if ! mount -t tmpfs -o "size=${DRILL_MB}m" tmpfs "$mnt" 2>"$work/mount.err"; then
  echo "full-disk drill skipped: cannot mount a tmpfs here ($(head -c 200 "$work/mount.err"))"
  exit 0
fi
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  umount "$mnt" 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "full-disk drill FAILED: $*" >&2; tail -n 20 "$work/server.log" >&2 || true; exit 1; }

# RocksDB refuses writes once a flush finds the disk full, after about
# 170,000 of these updates fill its memtable: twice that many are ready.
"$bin" gen --persons 400000 --entities 0 --out "$work/gen" >/dev/null
find "$work/gen" -type f ! -name hukou.ndjson -delete
split -l 5000 -d -a 3 "$work/gen/hukou.ndjson" "$work/hukou-"
chunks=("$work"/hukou-*)
cat >"$mnt/basedata.toml" <<'EOF'
[[departments]]
id = "gongan"
roles = ["provider", "consumer"]
token = "drill-gongan-token-000000000000"

[[departments]]
id = "shebao-counter"
roles = ["consumer"]
token = "drill-counter-token-00000000000"
EOF
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
start() {
  (cd "$mnt" && exec "$bin" serve --data data --config basedata.toml --listen "127.0.0.1:$port" 2>>"$work/server.log") &
  server=$!
  for _ in $(seq 1 150); do curl -sf "$url/readyz" >/dev/null && return 0; sleep 0.2; done
  fail "the server did not start"
}
P='Authorization: Bearer drill-gongan-token-000000000000'
C='Authorization: Bearer drill-counter-token-00000000000'
# push CHUNK: the status; the answer in $work/push.json
push() {
  curl -s -o "$work/push.json" -w '%{http_code}' -X POST -H "$P" -H 'X-Purpose: drill' \
    -H 'Content-Type: application/x-ndjson' --data-binary "@$1" "$url/v1/datasets/hukou/updates"
}
# verify CHUNK: an audited verification of the chunk's first key
verify() {
  local key
  key=$(head -c 40 "$1" | sed 's/.*"key":"\([0-9X]*\)".*/\1/')
  curl -s -o "$work/verify.json" -w '%{http_code}' -X POST -H "$C" -H 'X-Purpose: drill' \
    -H 'Content-Type: application/json' --data '{"dataset":"hukou","fields":{"name":"x"}}' "$url/v1/persons/$key/verify"
}
last_seq() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["last_seq"])' "$1"; }
readyz() { curl -s -o "$work/readyz.json" -w '%{http_code}' "$url/readyz"; }

start
acked=0
for f in "${chunks[@]:0:5}"; do
  [ "$(push "$f")" = 200 ] || fail "an update before the disk filled: $(cat "$work/push.json")"
  acked=$(last_seq "$work/push.json")
done
avail=$(df -B1 --output=avail "$mnt" | tail -n 1)
fallocate -l $((avail - 8 * 1024 * 1024)) "$mnt/filler"
i=5
while :; do
  [ "$i" -lt "${#chunks[@]}" ] || fail "every update was taken on a full disk"
  code=$(push "${chunks[$i]}")
  [ "$code" = 200 ] || break
  acked=$(last_seq "$work/push.json")
  i=$((i + 1))
done
[ "$code" = 503 ] || fail "an update on a full disk: $code $(cat "$work/push.json")"
grep -q '"code":"unavailable"' "$work/push.json" || fail "not unavailable: $(cat "$work/push.json")"
echo "disk full after $i chunks of 5,000 updates: update $code, $(head -c 120 "$work/push.json")…"
answered=0
for _ in 1 2 3; do
  [ "$(push "${chunks[$i]}")" = 503 ] || fail "an update taken while the disk is still full"
  # A use whose record fits where the journal had allocated is answered;
  # anything but that or 503 is wrong.
  v=$(verify "${chunks[$i]}")
  case "$v" in
    200) answered=$((answered + 1)) ;;
    503) ;;
    *) fail "a verification on a full disk: $v $(cat "$work/verify.json")" ;;
  esac
  sleep 1
done
echo "while full: updates answered 503; verifications 503 or, where their uses could still be recorded, 200 ($answered of 3)"
rm -f "$mnt/filler"
back=""
for n in $(seq 1 60); do
  if [ "$(readyz)" = 200 ] && [ "$(verify "${chunks[$i]}")" = 200 ] && [ "$(push "${chunks[$i]}")" = 200 ]; then
    back=$n
    break
  fi
  sleep 0.5
done
[ -n "$back" ] || fail "writes did not come back within 30 s of freeing space"
acked=$(last_seq "$work/push.json")
for f in "${chunks[@]:$((i + 1)):3}"; do
  [ "$(push "$f")" = 200 ] || fail "an update after space came back: $(cat "$work/push.json")"
  acked=$(last_seq "$work/push.json")
done
echo "space freed: updates, verifications and /readyz back after $back tries, 0.5 s apart, no restart"
kill "$server"
wait "$server" || fail "the server did not stop cleanly"
server=""
start
[ "$(readyz)" = 200 ] || fail "/readyz after the restart"
got=$(last_seq "$work/readyz.json")
[ "$got" = "$acked" ] || fail "after the restart the store is at change $got, the last acknowledged was $acked"
kill "$server"
wait "$server" || true
server=""
"$bin" audit-verify --data "$mnt/data" >"$work/audit.json" || fail "audit-verify: $(cat "$work/audit.json")"
python3 - "$work/audit.json" <<'PY' || fail "audit chain or index: $(cat "$work/audit.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] and d["index"]["ok"], d
print(f"after a restart: the last acknowledged change, nothing refused; audit chain of {d['entries']} entries and its index whole")
PY
echo "full-disk drill passed"
# A directory of its own making goes (its generated files are large);
# after a failure it stays, with the server's log.
if [ -n "$made" ]; then
  umount "$mnt" 2>/dev/null || true
  rm -rf "$work"
fi
