# shellcheck shell=bash disable=SC2034  # variables are for the scripts that source this
# Sourced by the lab/slurm scripts (after lib.sh).
SLURM_STATE="$LAB_STATE/slurm"
DB_PASSWORD_FILE="$SLURM_STATE/db-password"
SLURM_RUN=/run/slurm

# proc_alive PID: running, not a zombie (PID 1 here is not an init that reaps promptly).
proc_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
# pid_alive FILE NAME: the pid in FILE is a live process called NAME (pid files outlive
# crashes, and pids get reused).
pid_alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && proc_alive "$pid"
}
munge_up() { pid_alive /run/munge/munged.pid munged && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
mariadb_up() { mariadb-admin --connect-timeout=2 ping >/dev/null 2>&1; }
slurmdbd_up() { pid_alive "$SLURM_RUN/slurmdbd.pid" slurmdbd; }
slurmctld_up() { pid_alive "$SLURM_RUN/slurmctld.pid" slurmctld; }
slurmd_up() { pid_alive "$SLURM_RUN/slurmd.pid" slurmd; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.5 s.
wait_for() {
  local limit=$(( $1 * 2 )) what=$2 i; shift 2
  for ((i = 0; i < limit; i++)); do
    if "$@"; then return 0; fi
    sleep 0.5
  done
  log "timed out after ${limit}x0.5 s waiting for $what"
  return 1
}

# stop_pid FILE NAME: TERM, wait up to 30 s, then KILL.
stop_pid() {
  local pid
  pid_alive "$1" "$2" || { log "$2: not running"; return 0; }
  pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do proc_alive "$pid" || break; sleep 0.5; done
  if proc_alive "$pid"; then
    log "$2: still running after 30 s, killing $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  log "$2: stopped"
}
