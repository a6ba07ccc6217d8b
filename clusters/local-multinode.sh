#!/usr/bin/env bash
# Start a multi-node Ray cluster on ONE machine: a head node plus N worker nodes,
# each a separate raylet with its own ports and temp dir. Handy for trying
# `raytraj transfer --backend ray` across "nodes" without a cloud account.
#
#   clusters/local-multinode.sh start --workers 2
#   clusters/local-multinode.sh status
#   clusters/local-multinode.sh stop
#
# Every node runs `ray start --block` in the background; the script records the
# PIDs in a state dir and `stop` ends exactly those processes (never a global
# `ray stop`, which would also kill unrelated Ray clusters on this machine).
#
# Security: the nodes register as 127.0.0.1, the dashboard (and with it the Jobs
# API for `ray job submit`) listens on 127.0.0.1 only, and token authentication is on
# (RAY_AUTH_MODE=token with a fresh token kept in the state dir, not in
# ~/.ray/auth_token). Note that Ray's GCS and raylets still listen on all
# interfaces whatever --node-ip-address says, so on a shared or exposed host the
# token (and a host firewall) is what keeps others out. Clients (raytraj, the ray
# CLI) must export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH; `start` and
# `env` print the lines.
set -euo pipefail

export RAY_USAGE_STATS_ENABLED=0

PROG=$(basename "$0")
STATE_DIR=${RAYTRAJ_LOCAL_CLUSTER_DIR:-/tmp/raytraj-cluster}
WORKERS=2
CPUS_PER_NODE=1
OBJECT_STORE_MB=256
HEAD_PORT=""
PYTHON=${PYTHON:-python3}
START_TIMEOUT=${START_TIMEOUT:-90}
MARKER=.raytraj-local-cluster

usage() {
    cat <<EOF
Usage: $PROG COMMAND [OPTIONS]

Start a local multi-node Ray cluster (one head + N workers on 127.0.0.1).

Commands:
  start     start the head and N worker nodes, then print how to use them
  status    show the cluster's nodes and resources (ray status)
  env       print the export lines that point a shell at the cluster
  stop      stop only the nodes this script started (PIDs in the state dir)
  help      show this text

Options (start):
  --workers N          worker nodes besides the head (default: $WORKERS)
  --cpus-per-node N    logical CPUs each node advertises (default: $CPUS_PER_NODE)
  --object-store-mb N  object store size per node in MiB (default: $OBJECT_STORE_MB)
  --port PORT          GCS port of the head (default: a free port)
Options (all):
  --dir DIR            state dir: PIDs, logs, temp dirs, token
                       (default: \$RAYTRAJ_LOCAL_CLUSTER_DIR or /tmp/raytraj-cluster;
                       keep it short, Ray's socket paths live under it)

Environment: PYTHON (interpreter with ray installed, default python3),
START_TIMEOUT (seconds to wait for the nodes, default 90).
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pid_alive() { kill -0 "$1" 2>/dev/null; }

running_pids() {
    local f pid
    shopt -s nullglob
    for f in "$STATE_DIR"/pids/*.pid; do
        pid=$(cat "$f")
        if pid_alive "$pid"; then echo "$pid"; fi
    done
    shopt -u nullglob
}

client_env() {
    cat <<EOF
export RAY_ADDRESS=127.0.0.1:$(cat "$STATE_DIR/head_port")
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STATE_DIR/auth_token
export RAY_USAGE_STATS_ENABLED=0
EOF
}

# start_node NAME ARGS... : run `ray start --block ARGS` in its own session, record its PID
start_node() {
    local name=$1; shift
    local log="$STATE_DIR/logs/$name.log"
    mkdir -p "$STATE_DIR/tmp/$name"
    # A SIGTERMed node drains first (for Ray Serve); the head never finishes
    # draining, so keep the wait short for a local test cluster.
    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-3} \
    setsid ray start --block --disable-usage-stats \
        --node-ip-address=127.0.0.1 \
        --temp-dir="$STATE_DIR/tmp/$name" \
        --num-cpus="$CPUS_PER_NODE" --num-gpus=0 \
        --object-store-memory=$((OBJECT_STORE_MB * 1024 * 1024)) \
        --node-manager-port="$(free_port)" \
        --object-manager-port="$(free_port)" \
        --dashboard-agent-listen-port="$(free_port)" \
        --dashboard-agent-grpc-port="$(free_port)" \
        --runtime-env-agent-port="$(free_port)" \
        --metrics-export-port="$(free_port)" \
        "$@" >"$log" 2>&1 </dev/null &
    echo $! >"$STATE_DIR/pids/$name.pid"
}

# wait_for_nodes N : wait until N nodes are alive (connects one short-lived driver)
wait_for_nodes() {
    local want=$1
    "$PYTHON" - "$want" "$START_TIMEOUT" <<'PY'
import sys, time, logging
import ray
want, timeout = int(sys.argv[1]), float(sys.argv[2])
ray.init(logging_level=logging.ERROR, log_to_driver=False)
deadline = time.time() + timeout
alive = 0
while time.time() < deadline:
    alive = sum(1 for n in ray.nodes() if n["Alive"])
    if alive >= want:
        break
    time.sleep(1)
ray.shutdown()
print(f"{alive} of {want} nodes alive")
sys.exit(0 if alive >= want else 1)
PY
}

cmd_start() {
    command -v ray >/dev/null || die "ray is not on PATH (activate the virtualenv first)"
    "$PYTHON" -c "import ray" 2>/dev/null || die "$PYTHON cannot import ray (set PYTHON=...)"
    [[ "$WORKERS" =~ ^[0-9]+$ ]] || die "--workers must be a number"
    if [ -n "$(running_pids 2>/dev/null)" ]; then
        die "a cluster from $STATE_DIR is already running; run '$PROG stop --dir $STATE_DIR' first"
    fi
    # Only ever clean up a dir this script created (it holds a marker file).
    if [ -d "$STATE_DIR" ] && [ -n "$(ls -A "$STATE_DIR")" ] && [ ! -f "$STATE_DIR/$MARKER" ]; then
        die "$STATE_DIR exists and was not made by $PROG; pick another --dir"
    fi
    rm -rf "${STATE_DIR:?}/pids" "${STATE_DIR:?}/logs" "${STATE_DIR:?}/tmp" \
        "${STATE_DIR:?}/auth_token" "${STATE_DIR:?}/head_port"
    mkdir -p "$STATE_DIR/pids" "$STATE_DIR/logs" "$STATE_DIR/tmp"
    touch "$STATE_DIR/$MARKER"
    chmod 700 "$STATE_DIR"

    # A fresh token for this cluster only (not ~/.ray/auth_token).
    (umask 077; "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$STATE_DIR/auth_token")
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE_DIR/auth_token"

    HEAD_PORT=${HEAD_PORT:-$(free_port)}
    echo "$HEAD_PORT" >"$STATE_DIR/head_port"
    export RAY_ADDRESS="127.0.0.1:$HEAD_PORT"

    echo "Starting head on 127.0.0.1:$HEAD_PORT (logs: $STATE_DIR/logs)"
    # The dashboard serves the Jobs API that `ray job submit` needs; bound to loopback only.
    DASHBOARD_PORT=${DASHBOARD_PORT:-$(free_port)}
    echo "$DASHBOARD_PORT" >"$STATE_DIR/dashboard_port"
    start_node head --head --port="$HEAD_PORT" --include-dashboard=true \
        --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
        --ray-client-server-port="$(free_port)"
    # Wait for the GCS before the workers try to join.
    local i
    for ((i = 0; i < START_TIMEOUT; i++)); do
        if "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', $HEAD_PORT), 1)" 2>/dev/null; then
            break
        fi
        pid_alive "$(cat "$STATE_DIR/pids/head.pid")" || { cat "$STATE_DIR/logs/head.log" >&2; die "the head exited"; }
        sleep 1
    done

    for ((i = 1; i <= WORKERS; i++)); do
        echo "Starting worker $i"
        start_node "worker$i" --address="127.0.0.1:$HEAD_PORT"
    done

    if ! wait_for_nodes $((WORKERS + 1)); then
        echo "Not all nodes came up; logs are in $STATE_DIR/logs. Stopping." >&2
        cmd_stop
        exit 1
    fi

    cat <<EOF

Local Ray cluster is up: 1 head + $WORKERS workers, $CPUS_PER_NODE CPU(s) each.
Point a shell at it (token auth is on, so the token variables are required):

$(client_env)

Then run a transfer on it, e.g.:

  raytraj train --model mlp --data mnist1d --epochs 30 --seed 1 --out runs/src
  raytraj transfer --source runs/src --target-seed 2 --method fgmt --steps 30 \\
      --out runs/fgmt --backend ray --address auto --workers $((WORKERS + 1)) --cpus-per-worker 1

  ray status        # the ray CLI needs the same RAY_AUTH_MODE/RAY_AUTH_TOKEN_PATH
  ray job submit --address http://127.0.0.1:$DASHBOARD_PORT --working-dir . -- raytraj transfer ...

Stop it with:  $PROG stop$( [ "$STATE_DIR" = /tmp/raytraj-cluster ] || printf ' --dir %s' "$STATE_DIR")
EOF
}

cmd_stop() {
    if [ ! -d "$STATE_DIR/pids" ] || [ -z "$(running_pids)" ]; then
        echo "No running nodes recorded in $STATE_DIR"
        return 0
    fi
    local f pid name i
    shopt -s nullglob
    local files=("$STATE_DIR"/pids/*.pid)
    shopt -u nullglob
    # Workers first, then the head. Each `ray start --block` was started with
    # setsid, so its PID is also its process group: signal the group to take its
    # raylet and Ray workers with it.
    for f in "${files[@]}"; do
        name=$(basename "$f" .pid)
        [ "$name" = head ] && continue
        pid=$(cat "$f")
        if pid_alive "$pid"; then echo "Stopping $name (pid $pid)"; kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; fi
    done
    if [ -f "$STATE_DIR/pids/head.pid" ]; then
        pid=$(cat "$STATE_DIR/pids/head.pid")
        if pid_alive "$pid"; then echo "Stopping head (pid $pid)"; kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; fi
    fi
    for ((i = 0; i < 60; i++)); do
        [ -z "$(running_pids)" ] && break
        sleep 0.5
    done
    for pid in $(running_pids); do
        echo "pid $pid still running after 30 s; sending SIGKILL to its process group"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    for f in "${files[@]}"; do
        pid=$(cat "$f")
        pid_alive "$pid" || rm -f "$f"
    done
    echo "Stopped. Logs and temp dirs stay in $STATE_DIR (delete it when done)."
}

cmd_status() {
    [ -f "$STATE_DIR/head_port" ] || die "no cluster state in $STATE_DIR"
    [ -n "$(running_pids)" ] || die "no node from $STATE_DIR is running"
    eval "$(client_env)"
    ray status --address="$RAY_ADDRESS"
}

# ---- argument parsing ----
if [ $# -eq 0 ]; then
    usage >&2
    exit 2
fi
COMMAND=$1; shift
case "$COMMAND" in
    -h|--help|help) usage; exit 0 ;;
esac
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS=${2:?--workers needs a value}; shift 2 ;;
        --cpus-per-node) CPUS_PER_NODE=${2:?--cpus-per-node needs a value}; shift 2 ;;
        --object-store-mb) OBJECT_STORE_MB=${2:?--object-store-mb needs a value}; shift 2 ;;
        --port) HEAD_PORT=${2:?--port needs a value}; shift 2 ;;
        --dir) STATE_DIR=${2:?--dir needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$PROG: unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done

case "$COMMAND" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env)
        [ -f "$STATE_DIR/head_port" ] || die "no cluster state in $STATE_DIR"
        client_env ;;
    *) echo "$PROG: unknown command: $COMMAND" >&2; usage >&2; exit 2 ;;
esac
