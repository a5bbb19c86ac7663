#!/usr/bin/env bash
# `make lab`: installs and starts everything the integration tests need, on this machine,
# without systemd. Idempotent: what is up stays up; config changes are applied.
# Logs of each step: $LAB_LOG/up-<step>.log as well as the terminal.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
SECONDS=0
mkdir -p "$LAB_LOG" "$LAB_STATE"

failed=()
step() {  # step NAME SCRIPT [ARGS...]: a failing component does not hide the others' state
  local name=$1 t0=$SECONDS; shift
  log "== $name"
  if bash "$@"; then
    log "== $name: ok ($(( SECONDS - t0 )) s)"
  else
    log "== $name: FAILED ($(( SECONDS - t0 )) s)"
    failed+=("$name")
    return 1
  fi
}

# Each later step needs the ones before it (Slurm's hooks need the broker URL, everything
# needs the packages), so stop at the first failure.
step packages "$here/packages.sh" \
  && step nas "$here/nas/up.sh" \
  && step rabbitmq "$here/rabbitmq/up.sh" \
  && step slurm "$here/slurm/up.sh" \
  || true

if [ ${#failed[@]} -eq 0 ]; then
  if [ -f "$here/k8s/up.sh" ]; then
    step k8s "$here/k8s/up.sh" || true
  elif [ -n "${CI:-}" ]; then
    log "k8s: lab/k8s/up.sh is missing"
    failed+=(k8s)
  else
    log "k8s: not yet available (lab/k8s/up.sh missing), continuing without Kubernetes"
  fi
  # After k8s: services.env carries KUBECONFIG once Kubernetes is up.
  step hooks "$here/slurm/install-hooks.sh" || true
  # Docker and compose v2 for compose.yaml's checks and `make compose-demo`.
  step docker "$here/docker/up.sh" || true
fi

echo
bash "$here/status.sh"
echo
if [ ${#failed[@]} -gt 0 ]; then
  log "lab: FAILED: ${failed[*]} (after ${SECONDS} s); logs in $LAB_LOG"
  exit 1
fi
log "lab: up in ${SECONDS} s"
