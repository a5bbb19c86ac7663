#!/usr/bin/env bash
# Stops the lab's Docker engine (lab/docker/up.sh) and everything it runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"
pid=$(cat "$DOCKER_PID" 2>/dev/null || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  # dockerd stops its containers (10 s grace each) and its containerd on SIGTERM.
  kill -TERM "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && die "docker: dockerd (pid $pid) did not stop"
  log "docker: stopped"
fi
