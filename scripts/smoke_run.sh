#!/usr/bin/env bash
# `make run` as a person starts it: wait until it answers /health/ready/, then Ctrl-C it and check
# that it stopped cleanly (status 130, servers stopped, nothing of it left running). Uses $VENV and $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${VENV:-.venv}/bin/python"
home=$(mktemp -d)
log="$home/make-run.log"
port=$("$py" -c 'from scripts.servers import free_port; print(free_port())')
flower=$("$py" -c 'from scripts.servers import free_port; print(free_port())')

DEVSTACK_HOME="$home/devstack" PORT=$port FLOWER_PORT=$flower DJANGO_STATIC_ROOT="$home/static" \
  setsid make run >"$log" 2>&1 &
run=$!
cleanup() { kill -KILL -- "-$run" 2>/dev/null || true; }
trap cleanup EXIT

ready() { "$py" -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health/ready/', timeout=2)" 2>/dev/null; }
deadline=$((SECONDS + 300))
until ready; do
  if ! kill -0 "$run" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
    echo "== make run did not answer /health/ready/:" >&2
    tail -50 "$log" >&2
    exit 1
  fi
  sleep 1
done
echo "== make run answered /health/ready/ after ${SECONDS}s; stopping it (Ctrl-C)"
kill -INT -- "-$run"
status=0
wait "$run" || status=$?
sleep 1
left=$(ps -o pid=,args= -s "$run" || true)
# The servers run in sessions of their own (Ctrl-C reaches the app first): their ports must be closed.
for server_port in $(sed -n 's/^devstack: [A-Za-z]* on 127.0.0.1:\([0-9]*\).*/\1/p' "$log"); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$server_port") 2>/dev/null; then
    left="$left a server on port $server_port"
  fi
done
# Interrupted, make reports its recipe's status 130 ("Error 130") and exits 2.
if { [ "$status" -ne 130 ] && ! { [ "$status" -eq 2 ] && grep -q "run\] Error 130" "$log"; }; } || [ -n "$left" ]; then
  echo "== make run did not stop cleanly: exit status $status; still running: ${left:-nothing}" >&2
  tail -30 "$log" >&2
  exit 1
fi
trap - EXIT
rm -rf "$home"
echo "== make run stopped cleanly: interrupted (status 130), servers stopped, nothing left running"
