#!/usr/bin/env bash
# Stops the lab's RabbitMQ node; data (queues, users, messages) stays on disk.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"

if rmq_running; then
  pid=$(rmq_pid)
  # shutdown (unlike stop) waits until the OS process is gone.
  rabbitmqctl -q shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do rmq_proc_alive "$pid" || break; sleep 0.5; done
  if rmq_proc_alive "$pid"; then
    log "rabbitmq: did not stop in 30 s, killing $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "rabbitmq: stopped"
else
  log "rabbitmq: not running"
fi
