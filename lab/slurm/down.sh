#!/usr/bin/env bash
# Stops the hook relay, slurmd, slurmctld, slurmdbd, MariaDB and munge. State stays: slurmctld saves its
# jobs to /var/spool/slurmctld and accounting lives in MariaDB, so `up.sh` resumes both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"

bash "$here/relay.sh" stop
stop_pid "$SLURM_RUN/slurmd.pid" slurmd
stop_pid "$SLURM_RUN/slurmctld.pid" slurmctld
stop_pid "$SLURM_RUN/slurmdbd.pid" slurmdbd
if mariadb_up; then
  mariadb-admin shutdown && log "mariadb: stopped"
else
  log "mariadb: not running"
fi
stop_pid /run/munge/munged.pid munged
