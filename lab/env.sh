#!/usr/bin/env bash
# Prints the lab's settings as `export` lines for tests, services and people:
#   source <(bash lab/env.sh)
# Reads files only; never starts anything, so it is safe (and quick) to call anywhere.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/rabbitmq/common.sh"

emit() { printf 'export %s=%q\n' "$1" "$2"; }

pw=$(rmq_cred password || true)
if [ -n "$pw" ]; then
  emit AMQP_URL "amqp://$RMQ_USER:$pw@127.0.0.1:5672/$RMQ_VHOST"
else
  echo "# AMQP_URL: no RabbitMQ credentials in $RMQ_CREDENTIALS yet (run make lab)"
fi
emit RABBITMQ_MGMT_URL "http://127.0.0.1:15672"
emit SLURM_CONF /etc/slurm/slurm.conf
emit NAS_ROOT "$NAS_ROOT"
emit REGISTRY "$REGISTRY"
emit LAB_NODE "$LAB_NODE"
emit SLURMK8S_POLICY /etc/slurm-k8s/policy.conf
if [ -f "$here/k8s/env.sh" ]; then
  bash "$here/k8s/env.sh" || echo "# lab/k8s/env.sh failed: no Kubernetes settings"
fi
