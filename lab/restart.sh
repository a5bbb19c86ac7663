#!/usr/bin/env bash
# Restarts one shared lab daemon and waits until it answers again: rabbitmq, slurmctld or
# kube-apiserver. Used by the chaos run (tests/chaos.py); everything else keeps running.
# The daemon is stopped the way its component's down.sh stops it, and started the way its
# up.sh starts it; slurmctld is started directly (slurm/up.sh would also resume a drained
# node, which would hide exactly what the chaos run checks).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

case "${1:-}" in
  rabbitmq)
    bash "$here/rabbitmq/down.sh"
    bash "$here/rabbitmq/up.sh"
    ;;
  slurmctld)
    . "$here/slurm/common.sh"
    stop_pid "$SLURM_RUN/slurmctld.pid" slurmctld
    log "slurmctld: starting"
    slurmctld
    ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
    wait_for 60 slurmctld ctld_ok || die "slurmctld: not answering"
    log "slurmctld: restarted"
    ;;
  kube-apiserver)
    . "$here/k8s/common.sh"
    alive kube-apiserver kube-apiserver || die "kube-apiserver: not running"
    # The same command line k8s/up.sh started it with (its fingerprint stays valid).
    mapfile -d '' argv < "/proc/$(cat "$(pidfile kube-apiserver)")/cmdline"
    stop_daemon kube-apiserver kube-apiserver
    start_daemon kube-apiserver "${argv[@]}"
    wait_for 120 kube-apiserver apiserver_healthy || die "kube-apiserver: not healthy"
    log "kube-apiserver: restarted"
    ;;
  *)
    echo "usage: $0 rabbitmq|slurmctld|kube-apiserver" >&2
    exit 2
    ;;
esac
