#!/usr/bin/env bash
# `make compose-demo`: the seed's hello job through both doors with every service in a
# container (compose.yaml + compose.lab.yaml), on the lab's Slurm and Kubernetes, then
# `docker compose down`. Takes the lab broker's place for its duration (the prolog and epilog
# publish to 127.0.0.1:5672): the lab's RabbitMQ and any lab services are stopped first and
# brought back afterwards, whatever happens. Nothing else may consume the lab's queues
# meanwhile, so do not run it beside `make test`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/../rabbitmq/common.sh"
. "$here/common.sh"
SECONDS=0

bash "$here/up.sh"
bash "$here/images.sh" 2> >(grep -v -e DEPRECATED -e 'legacy builder' -e buildx -e 'docs.docker.com' -e '^ *$' >&2)

# The compose file's settings for this lab: the lab broker's credentials (the hooks' URL
# keeps working), the host's NAS, Slurm and munge, a self-contained copy of the kubeconfig.
eval "$(bash "$REPO_ROOT/lab/env.sh")"
mkdir -p "$DOCKER_STATE" && chmod 700 "$DOCKER_STATE"
kubectl config view --flatten --minify >"$DOCKER_STATE/kubeconfig.tmp"
chmod 600 "$DOCKER_STATE/kubeconfig.tmp" && mv "$DOCKER_STATE/kubeconfig.tmp" "$DOCKER_STATE/kubeconfig"
envfile="$DOCKER_STATE/compose.env"
( umask 077
  printf '%s\n' "RABBITMQ_USER=$RMQ_USER" "RABBITMQ_PASSWORD=$(rmq_cred password)" \
    "RABBITMQ_VHOST=$RMQ_VHOST" "AMQP_HOST=127.0.0.1" "NAS_ROOT=$NAS_ROOT" \
    "KUBECONFIG_FILE=$DOCKER_STATE/kubeconfig" "SLURMK8S_IMAGE=slurm-k8s:dev" >"$envfile" )
compose=(docker compose -p slurm-k8s-lab -f "$REPO_ROOT/compose.yaml"
         -f "$REPO_ROOT/compose.lab.yaml" --env-file "$envfile")

services_were_up=
bash "$REPO_ROOT/lab/services.sh" status | grep -q ': up' && services_were_up=1
restore() {
  local rc=$?
  "${compose[@]}" logs --no-color --timestamps >"$LAB_LOG/compose-demo.log" 2>&1 || true
  log "compose-demo: docker compose down"
  "${compose[@]}" down --volumes --timeout 30 || rc=1
  log "compose-demo: bringing the lab's RabbitMQ back"
  # The broker outlives this script: it must not inherit a lock this script runs under.
  ( lab_close_fds; exec bash "$REPO_ROOT/lab/rabbitmq/up.sh" ) || rc=1
  if [ -n "$services_were_up" ]; then bash "$REPO_ROOT/lab/services.sh" start || rc=1; fi
  log "compose-demo: container logs in $LAB_LOG/compose-demo.log ($SECONDS s in all)"
  exit "$rc"
}
trap restore EXIT
bash "$REPO_ROOT/lab/services.sh" stop
bash "$REPO_ROOT/lab/rabbitmq/down.sh"

log "compose-demo: docker compose up -d --wait"
"${compose[@]}" up -d --wait --wait-timeout 180
"${compose[@]}" ps --format 'table {{.Service}}\t{{.Status}}'
DEMO_SERVICES=running bash "$REPO_ROOT/examples/demo.sh"
