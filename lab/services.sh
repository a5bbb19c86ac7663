#!/usr/bin/env bash
# Runs the project's services on the lab host as background processes, the way a site without
# Kubernetes-hosted services would run them under systemd: `start`, `stop`, `status`.
# Logs: $LAB_LOG/services/<name>.log (one JSON object a line). Used by `make demo`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

services=(watcher validator launcher collector)
run="$LAB_STATE/run/services"
logs="$LAB_LOG/services"
python="$REPO_ROOT/.venv/bin/python"
mkdir -p "$run" "$logs"

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

start() {
  # The services read the same settings as the tests: the lab's one source of truth.
  eval "$(bash "$here/env.sh")"
  for s in "${services[@]}"; do
    if alive "$s"; then log "$s: already running (pid $(cat "$run/$s.pid"))"; continue; fi
    if [ ! -f "$REPO_ROOT/services/$s/__main__.py" ]; then die "$s: services/$s is missing"; fi
    (cd "$REPO_ROOT" && exec setsid "$python" -m "services.$s" >>"$logs/$s.log" 2>&1) &
    echo $! >"$run/$s.pid"
    log "$s: started (pid $!, log $logs/$s.log)"
  done
}

stop() {
  for s in "${services[@]}"; do
    if alive "$s"; then
      pid=$(cat "$run/$s.pid")
      kill -TERM "$pid"
      # SIGTERM lets the service finish the message in flight; give it the grace a Pod gets.
      for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$pid" 2>/dev/null || true
      log "$s: stopped"
    fi
    rm -f "$run/$s.pid"
  done
}

status() {
  for s in "${services[@]}"; do
    if alive "$s"; then echo "$s: up pid $(cat "$run/$s.pid")"; else echo "$s: down"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
