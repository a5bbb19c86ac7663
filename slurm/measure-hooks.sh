#!/usr/bin/env bash
# Times the installed prolog and epilog the way slurmd runs them (root, a job's environment)
# and prints the median and worst of N runs each, without the node's relay (the Python hook
# publishes) and with one (slurm/hook hands the environment over). No assertions: it is a
# measuring stick.
#   usage: slurm/measure-hooks.sh [N]    (default 20)
# AMQP_URL from the environment is used if set (e.g. `source <(bash lab/env.sh)`); otherwise
# the site's /etc/slurm-k8s/services.env. AMQP_URL=amqp://u:p@127.0.0.1:1/ measures the
# broker-down path. Events go to a throwaway spool, so nothing real is launched unless the
# broker is reachable (then the job ids, 900000+, are unknown to Slurm and the launcher
# drops them).
set -euo pipefail
n=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
hooks=${HOOKS_DIR:-/etc/slurm/slurm-k8s}
[ -x "$hooks/prolog" ] || hooks=$here
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HOOKS_SPOOL_DIR=$work/outbox HOOKS_LOG_FILE=$work/hooks.log
if [ -z "${SLURMK8S_PYTHON:-}" ] && [ ! -x /opt/slurm-k8s/venv/bin/python ]; then
  export SLURMK8S_PYTHON=$here/../.venv/bin/python
fi

measure() {  # $1 = prolog|epilog; prints one duration in ms per run
  local i t0 t1
  for i in $(seq 1 "$n"); do
    t0=$(date +%s%N)
    env SLURM_JOB_ID=$((900000 + i)) SLURM_JOB_UID=2001 SLURM_JOB_GID=2000 \
      SLURM_JOB_USER=alice SLURMD_NODENAME="$(hostname -s)" SLURM_JOB_PARTITION=debug \
      SLURM_JOB_CPUS_PER_NODE=1 SLURM_JOB_RESTART_COUNT=0 SLURM_JOB_GPUS=0 \
      SLURM_SCRIPT_CONTEXT="${1}_slurmd" "$hooks/$1"
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
  done
}

report() {  # $1 = hook, $2 = path; reads durations
  sort -n | awk -v h="$1" -v hooks="$hooks" -v path="$2" '
    { v[NR] = $1 }
    END { printf "%s (%s, %s): median %d ms, max %d ms over %d runs\n", h, hooks, path, v[int((NR + 1) / 2)], v[NR], NR }'
}

# Without a relay on the outbox: the Python hook builds, spools and publishes the event.
for hook in prolog epilog; do measure "$hook" | report "$hook" "no relay: Python publishes"; done
left=$(find "$work/outbox" -name '*.json' 2>/dev/null | wc -l)
echo "events left in the spool (undelivered): $left"
# With one: a stand-in holds the relay's lock, so the hook hands slurmd's environment over.
mkdir -p "$work/outbox"
flock "$work/outbox/.relay.lock" sleep 600 &
holder=$!
trap 'kill $holder 2>/dev/null; rm -rf "$work"' EXIT
while flock -n "$work/outbox/.relay.lock" true; do sleep 0.01; done
for hook in prolog epilog; do measure "$hook" | report "$hook" "relay: hand-over"; done
