#!/usr/bin/env bash
# Slurm for the lab, without systemd: munge, MariaDB, slurmdbd, slurmctld, slurmd on one node
# named $LAB_NODE with four fake GPUs. Starts only what is down; re-renders the config and
# runs `scontrol reconfigure` when it changed. Never wipes slurmctld's state (no -c).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"
umask 022

lab_make_gpu_devices
install -d -o munge -g munge -m 0755 /run/munge
install -d -o mysql -g mysql -m 0755 /run/mysqld
install -d -o slurm -g slurm -m 0755 "$SLURM_RUN" "$LAB_LOG/slurm"
install -d -o slurm -g slurm -m 0700 /var/spool/slurmctld
install -d -m 0755 /var/spool/slurmd
install -d -m 0700 "$SLURM_STATE"

# --- munge -------------------------------------------------------------------------------
if ! munge_up; then
  log "munge: starting"
  [ -s /etc/munge/munge.key ] || die "munge: /etc/munge/munge.key missing (reinstall munge)"
  runuser -u munge -- /usr/sbin/munged
  wait_for 15 munge munge_up || die "munge: not answering, see /var/log/munge/munged.log"
fi

# --- MariaDB -----------------------------------------------------------------------------
if ! cmp -s "$here/mariadb.cnf" /etc/mysql/mariadb.conf.d/90-slurm-k8s-lab.cnf; then
  install -m 0644 "$here/mariadb.cnf" /etc/mysql/mariadb.conf.d/90-slurm-k8s-lab.cnf
  mariadb_up && log "mariadb: settings changed; they apply at its next start (make lab-down)"
fi
if ! mariadb_up; then
  log "mariadb: starting"
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql >>"$LAB_LOG/mariadb.log" 2>&1
  fi
  (setsid /usr/sbin/mariadbd --user=mysql </dev/null >>"$LAB_LOG/mariadb.log" 2>&1 &)
  wait_for 60 mariadb mariadb_up || die "mariadb: not answering, see $LAB_LOG/mariadb.log"
fi
if [ ! -s "$DB_PASSWORD_FILE" ]; then
  (umask 077; openssl rand -hex 16 >"$DB_PASSWORD_FILE")
fi
DB_PASSWORD=$(cat "$DB_PASSWORD_FILE")
# root reaches MariaDB through the unix socket (Debian's default), no password needed.
mariadb <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- configuration -----------------------------------------------------------------------
cpus=$(nproc)
# Topology as slurmd sees it: a node line that disagrees makes slurmd register as INVAL.
NODE_HW="CPUs=$cpus $(slurmd -C 2>/dev/null | head -1 | grep -oE '(Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' | tr '\n' ' ')"
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# Leave room for the OS, RabbitMQ, MariaDB and Kubernetes; the policy assumes ~16 GB for jobs.
REAL_MEMORY=$(( mem_mb - 4096 )); (( REAL_MEMORY <= 16000 )) || REAL_MEMORY=16000
(( REAL_MEMORY >= 1024 )) || REAL_MEMORY=1024
export LAB_NODE LAB_LOG NODE_HW REAL_MEMORY DB_PASSWORD

render() {  # render TEMPLATE DEST MODE OWNER -> returns 0 when DEST changed
  local tmp
  tmp=$(mktemp)
  envsubst '${LAB_NODE} ${LAB_LOG} ${NODE_HW} ${REAL_MEMORY} ${DB_PASSWORD}' <"$1" >"$tmp"
  if cmp -s "$tmp" "$2" && [ "$(stat -c '%a %U' "$2")" = "$3 $4" ]; then rm -f "$tmp"; return 1; fi
  install -m "$3" -o "$4" -g "$4" "$tmp" "$2"
  rm -f "$tmp"
  log "slurm: wrote $2"
}
conf_changed='' gres_changed='' dbd_changed=''
enforce_of() { grep -s '^AccountingStorageEnforce=' "$1" || true; }
enforce_before=$(enforce_of /etc/slurm/slurm.conf)
render "$here/slurm.conf.in" /etc/slurm/slurm.conf 644 root && conf_changed=1
render "$here/gres.conf.in" /etc/slurm/gres.conf 644 root && gres_changed=1
render "$here/slurmdbd.conf.in" /etc/slurm/slurmdbd.conf 600 slurm && dbd_changed=1

# slurm.conf includes slurm-k8s.conf and names the prolog/epilog: they must exist before
# any Slurm daemon or client reads it. The venv waits for the full install-hooks run.
bash "$here/install-hooks.sh" --no-venv

# --- slurmdbd ----------------------------------------------------------------------------
# slurmdbd (22.05) sends each answer as two writes, a length and then the body: with Nagle on
# its side and delayed ACKs on the client's, every sacct stalls about 85 ms (two 40 ms ACK
# timers) for a 10 ms query. ACKing at once on the route to slurmdbd (127.0.0.1 here, the
# DbdAddr) removes the stall; docs/deploy.md gives sites the same line for their route.
if ! ip route show table local 127.0.0.1 | grep -q quickack; then
  ip route change table local local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1 \
    quickack 1 && log "slurm: delayed ACKs off on the route to slurmdbd (127.0.0.1)"
fi
dbd_ok() { sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1; }
if [ -n "$dbd_changed" ] && slurmdbd_up; then
  log "slurmdbd: configuration changed, restarting"
  stop_pid "$SLURM_RUN/slurmdbd.pid" slurmdbd
fi
if ! slurmdbd_up; then
  log "slurmdbd: starting"
  slurmdbd
  # First start creates the accounting tables: give it time.
  wait_for 90 slurmdbd dbd_ok || die "slurmdbd: not answering, see $LAB_LOG/slurm/slurmdbd.log"
fi

# --- accounting: before slurmctld's first start, so it registers without a restart -------
cluster_added=
if ! sacctmgr -n -P show cluster format=cluster | grep -qx lab; then
  sacctmgr -i add cluster lab >/dev/null
  cluster_added=1
  log "slurm: cluster lab added to accounting"
fi
if ! sacctmgr -n -P show account research format=account | grep -qx research; then
  sacctmgr -i add account research cluster=lab description="lab users" organization=lab >/dev/null
fi
for entry in $LAB_USERS; do
  user=${entry%%:*}
  if ! sacctmgr -n -P show assoc where cluster=lab account=research user="$user" format=user \
      | grep -qx "$user"; then
    sacctmgr -i add user "$user" account=research defaultaccount=research cluster=lab >/dev/null
    log "slurm: $user added to account research"
  fi
done

# --- slurmctld ---------------------------------------------------------------------------
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
if [ -n "$cluster_added" ] && slurmctld_up; then
  # A controller that started before its cluster existed in accounting does not account jobs.
  log "slurmctld: restarting to register with accounting"
  stop_pid "$SLURM_RUN/slurmctld.pid" slurmctld
fi
if ! slurmctld_up; then
  log "slurmctld: starting"
  slurmctld
  wait_for 30 slurmctld ctld_ok || die "slurmctld: not answering, see $LAB_LOG/slurm/slurmctld.log"
elif [ -n "$conf_changed" ]; then
  log "slurmctld: configuration changed, scontrol reconfigure"
  scontrol reconfigure
  # AccountingStorageEnforce is read only when slurmctld starts (22.05): a reconfigure shows
  # the new value in `scontrol show config` but keeps taking any --account.
  if [ "$enforce_before" != "$(enforce_of /etc/slurm/slurm.conf)" ]; then
    log "slurmctld: AccountingStorageEnforce changed, restarting"
    stop_pid "$SLURM_RUN/slurmctld.pid" slurmctld
    slurmctld
    wait_for 30 slurmctld ctld_ok || die "slurmctld: not answering, see $LAB_LOG/slurm/slurmctld.log"
  fi
fi

# --- slurmd ------------------------------------------------------------------------------
if [ -n "$gres_changed" ] && slurmd_up; then
  # slurmd reads gres.conf only at start.
  log "slurmd: gres.conf changed, restarting"
  stop_pid "$SLURM_RUN/slurmd.pid" slurmd
fi
if ! slurmd_up; then
  log "slurmd: starting"
  slurmd -N "$LAB_NODE"
fi
node_state() { sinfo -h -N -n "$LAB_NODE" -o '%T' 2>/dev/null | head -1; }
node_ready() { case "$(node_state)" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac; }
resumed=
for _ in $(seq 1 60); do
  state=$(node_state)
  case "$state" in
    idle*|mixed*|allocated*|completing*) break ;;
    drain*)
      # A lab node drained (e.g. by a failing prolog) stays unusable until resumed.
      if [ -z "$resumed" ]; then
        log "slurm: node $LAB_NODE is $state ($(sinfo -h -N -n "$LAB_NODE" -o '%E')), resuming"
        scontrol update nodename="$LAB_NODE" state=resume || true
        resumed=1
      fi ;;
  esac
  sleep 0.5
done
node_ready || die "slurm: node $LAB_NODE is '$(node_state)', see $LAB_LOG/slurm/slurmd.log"
log "slurm: ready (node $LAB_NODE $(node_state), $(scontrol -V))"
