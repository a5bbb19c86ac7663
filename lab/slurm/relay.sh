#!/usr/bin/env bash
# The lab node's hook relay (`python -m services.hooks relay`, services/hooks/relay.py), run the
# way deploy/systemd/slurm-k8s-hook-relay.service runs it on a site's nodes: from the installed
# venv, with the hooks' settings, restarted when it dies. The lab has no systemd, so a small
# supervisor in its own session does that (1 s apart). `start` is idempotent, `restart` picks
# up a reinstalled package, `stop` ends both. Log: $LAB_LOG/slurm/hook-relay.log (the relay's
# own lines go to the hooks' log, /var/log/slurm-k8s/hooks.log).
#   usage: lab/slurm/relay.sh start|stop|restart|status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"

python=/opt/slurm-k8s/venv/bin/python
pidfile=$SLURM_RUN/hook-relay.pid
out=$LAB_LOG/slurm/hook-relay.log

up() { [ -f "$pidfile" ] && proc_alive "$(cat "$pidfile")"; }
# The relay holds this lock while it watches the outbox (what the hooks check).
holds_outbox() { ! flock -n /var/spool/slurm-k8s/outbox/.relay.lock true 2>/dev/null; }

start() {
  if up; then return 0; fi
  [ -x "$python" ] || die "hook relay: $python is missing (lab/slurm/install-hooks.sh)"
  mkdir -p "$SLURM_RUN" "$(dirname "$out")"
  (
    lab_close_fds
    child=
    trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null; exit 0' TERM INT
    while :; do
      "$python" -I -m services.hooks relay </dev/null >>"$out" 2>&1 &
      child=$!
      wait "$child" || true
      echo "[$(date +%T)] relay exited; restarting in 1 s" >>"$out"
      sleep 1
    done
  ) </dev/null >>"$out" 2>&1 &
  echo $! >"$pidfile"
  disown
  log "hook relay: started (supervisor pid $(cat "$pidfile"))"
}

stop() {
  if ! up; then rm -f "$pidfile"; return 0; fi
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do proc_alive "$pid" || break; sleep 0.25; done
  rm -f "$pidfile"
  log "hook relay: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status)
    if up && holds_outbox; then echo "hook-relay: up (supervisor pid $(cat "$pidfile"))"
    elif up; then echo "hook-relay: starting (not watching the outbox yet; see $out)"
    else echo "hook-relay: down"; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
