#!/usr/bin/env bash
# Migrate, load demo data, then serve HTTP + WebSocket with Daphne and run a
# Celery worker with beat beside it (and, with SIMULATE=1, a demo traffic
# simulator). Stops them all on Ctrl-C.
#
# HOST and PORT say where to listen (127.0.0.1:8000), VAR_DIR where the
# embedded database, broker and logs live (var/). A busy port fails at once,
# before anything is started; the URL is printed only once the server answers.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}
export SITE_URL=${SITE_URL:-http://$HOST:$PORT}
# Served over plain HTTP on this machine: no secure-only cookies or HTTPS redirect.
export ALLOW_HTTP=${ALLOW_HTTP:-true}
PY=.venv/bin/python
step() { echo "==> $*"; }

if ! $PY - "$HOST" "$PORT" <<'PYTHON'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
except OSError as exc:
    sys.exit(f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Is another server running there? Choose another port with PORT=8001 make run.")
PYTHON
then
  exit 1
fi

step "Preparing the database"
$PY manage.py migrate --no-input -v0
if [ "${SEED_DEMO:-1}" = "1" ]; then
  days=${DEMO_DAYS:-60}
  step "Loading $days day$([ "$days" = 1 ] || echo s) of demo data (the first run takes a minute or two; later runs add only the hours since)"
  $PY manage.py seed_demo --days "${DEMO_DAYS:-60}"
fi

VAR=${VAR_DIR:-var}
mkdir -p "$VAR"
# The worker runs in its own session (where setsid exists), so a signal to this
# script's process group reaches it only through the trap below, and a thread
# pool keeps it one process that stops cleanly.
detach=$(command -v setsid || true)
step "Starting the Celery worker and beat (log: $VAR/celery.log)"
$detach .venv/bin/celery -A thinnest_analytics worker --beat --pool=threads --concurrency=4 --loglevel=INFO \
  --schedule "$VAR/celerybeat-schedule" >"$VAR/celery.log" 2>&1 &
celery_pid=$!
stop_worker() {
  kill -TERM "$celery_pid" 2>/dev/null || return 0
  for _ in $(seq 20); do kill -0 "$celery_pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$celery_pid" 2>/dev/null || true
}
simulator_pid=
daphne_pid=
stop_process() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 40); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.25; done
  kill -KILL "$1" 2>/dev/null || true
}
stop_all() {
  # In order: the simulator hangs up its calls while the server still answers.
  stop_process "$simulator_pid"
  stop_process "$daphne_pid"
  stop_worker
}
trap stop_all EXIT INT TERM

# Daphne runs in its own session too, so Ctrl-C reaches it through stop_all, in order.
step "Starting the server on $HOST:$PORT"
# thinnest_analytics.server is Daphne with request bodies bounded while they arrive.
$detach $PY -m thinnest_analytics.server -b "$HOST" -p "$PORT" thinnest_analytics.asgi:application &
daphne_pid=$!
# The URL is announced once /healthz answers; if Daphne stops first (the port
# was taken meanwhile, say), say so and stop everything.
if ! $PY - "$SITE_URL/healthz" "$daphne_pid" <<'PYTHON'
import os, sys, time, urllib.request
url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("The server stopped before it answered (see the messages above).")
    time.sleep(0.25)
sys.exit(f"The server did not answer {url} within two minutes.")
PYTHON
then
  exit 1
fi

# SIMULATE=1: demo traffic (voice calls and chats) through the public API, with a key of its own.
if [ "${SIMULATE:-0}" = "1" ]; then
  sim_key=$($PY manage.py create_api_key demo --name simulator --scopes ingest | tail -1)
  PYTHONUNBUFFERED=1 $detach $PY manage.py simulate_traffic --url "$SITE_URL" --key "$sim_key" --rate "${SIMULATE_RATE:-6}" \
    >"$VAR/simulator.log" 2>&1 &
  simulator_pid=$!
fi

echo
echo "  thinnest analytics is running at $SITE_URL/"
echo "  log in as demo / demo     API docs: $SITE_URL/api/docs"
echo "  Celery worker + beat log: $VAR/celery.log     (Ctrl-C stops everything)"
if [ -n "$simulator_pid" ]; then echo "  demo traffic (voice calls, chats): $VAR/simulator.log"; fi
echo
wait "$daphne_pid"
