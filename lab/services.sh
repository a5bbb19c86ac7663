#!/usr/bin/env bash
# Runs the project's services on the lab host, supervised, the way a site without containers
# or Kubernetes runs them under systemd (deploy/systemd/): `start`, `stop`, `status`.
# Each service runs under a small supervisor (this script's `supervise`, in its own session)
# that restarts it when it dies, with a backoff of 1 s doubling to 30 s (reset after a minute
# up), and that stops it on SIGTERM, giving it the grace a Pod gets.
# Logs: $LAB_LOG/services/<name>.log (one JSON object a line; rotated to .1-.3 past 16 MiB),
# supervisor lines in $LAB_LOG/services/supervisor.log. Used by `make up`, `make down` and
# `make demo`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

services=(watcher validator launcher collector)
run="$LAB_STATE/run/services"
logs="$LAB_LOG/services"
python="$REPO_ROOT/.venv/bin/python"
mkdir -p "$run" "$logs"

# Running and not a zombie: PID 1 here is not an init that reaps exited orphans promptly.
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
alive() { [ -f "$run/$1.pid" ] && running "$(cat "$run/$1.pid")"; }

supervise() {  # NAME: runs until SIGTERM; the service is its child
  local s=$1 child='' stopping='' delay=1 started rc
  slog() { printf '[%(%H:%M:%S)T] %s: %s\n' -1 "$s" "$*" >>"$logs/supervisor.log"; }
  trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true' TERM INT
  cd "$REPO_ROOT"
  while [ -z "$stopping" ]; do
    started=$SECONDS
    # Through shared.logcap: the log rotates past 16 MiB, three old files kept (bounded).
    "$python" -m "services.$s" > >(exec "$python" -m shared.logcap "$logs/$s.log") 2>&1 </dev/null &
    child=$!
    echo "$child" >"$run/$s.child"
    slog "started pid $child"
    # A trapped signal ends `wait` early: wait again until the child itself is gone.
    rc=0; wait "$child" || rc=$?
    while kill -0 "$child" 2>/dev/null; do rc=0; wait "$child" || rc=$?; done
    child=''
    rm -f "$run/$s.child"
    [ -z "$stopping" ] || break
    [ $(( SECONDS - started )) -lt 60 ] || delay=1
    echo $(( $(cat "$run/$s.restarts" 2>/dev/null || echo 0) + 1 )) >"$run/$s.restarts"
    slog "exited with status $rc; restarting in $delay s"
    sleep "$delay" & wait $! || true
    delay=$(( delay * 2 > 30 ? 30 : delay * 2 ))
  done
  slog "stopped"
}

orphan_stop() {  # NAME: a service whose supervisor was killed outright still runs; end it
  local pid
  pid=$(cat "$run/$1.child" 2>/dev/null || true)
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "services\.$1"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do running "$pid" || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    log "$1: stopped pid $pid, left without its supervisor"
  fi
  rm -f "$run/$1.child"
}

start() {
  # The services read the same settings as the tests: the lab's one source of truth.
  eval "$(bash "$here/env.sh")"
  for s in "${services[@]}"; do
    if alive "$s"; then log "$s: already running (supervisor pid $(cat "$run/$s.pid"))"; continue; fi
    if [ ! -f "$REPO_ROOT/services/$s/__main__.py" ]; then die "$s: services/$s is missing"; fi
    orphan_stop "$s"
    rm -f "$run/$s.restarts"
    ( lab_close_fds
      exec setsid bash "$here/services.sh" supervise "$s" </dev/null >>"$logs/supervisor.log" 2>&1 ) &
    echo $! >"$run/$s.pid"
    log "$s: started, supervised (log $logs/$s.log)"
  done
}

stop() {
  local s pid child
  for s in "${services[@]}"; do
    if alive "$s"; then
      pid=$(cat "$run/$s.pid")
      kill -TERM "$pid"
      # SIGTERM lets the service finish the message in flight; give it the grace a Pod gets.
      for _ in $(seq 1 60); do running "$pid" || break; sleep 0.5; done
      if running "$pid"; then
        child=$(cat "$run/$s.child" 2>/dev/null || true)
        kill -KILL "$pid" ${child:+"$child"} 2>/dev/null || true
      fi
      log "$s: stopped"
    fi
    orphan_stop "$s"
    rm -f "$run/$s.pid"
  done
}

status() {
  local s
  for s in "${services[@]}"; do
    if alive "$s"; then
      echo "$s: up, supervisor pid $(cat "$run/$s.pid"), service pid $(cat "$run/$s.child" 2>/dev/null || echo -), restarts $(cat "$run/$s.restarts" 2>/dev/null || echo 0)"
    else
      echo "$s: down"
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  supervise) supervise "${2:?supervise NAME}" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
