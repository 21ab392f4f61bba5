#!/bin/sh
# The web process as make run (Procfile), the Docker image and Compose start it: uvicorn serving
# config.asgi:application with WEB_CONCURRENCY processes (default: one per core), which share
# their request metrics through PROMETHEUS_MULTIPROC_DIR (an empty folder made here when unset).
# Arguments go to uvicorn: scripts/web.sh --host 0.0.0.0 --port 8000
set -eu
workers="${WEB_CONCURRENCY:-$(nproc)}"
if [ "$workers" -gt 1 ] && [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  PROMETHEUS_MULTIPROC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/web-metrics.XXXXXX")
  export PROMETHEUS_MULTIPROC_DIR
fi
exec uvicorn config.asgi:application --workers "$workers" "$@"
