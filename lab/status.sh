#!/usr/bin/env bash
# `make lab-status`: one line per component, `<component>: up <version>` or `: down`.
# Always exits 0: it reports, it does not judge.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bash "$here/rabbitmq/status.sh"
bash "$here/slurm/status.sh"
bash "$here/nas/status.sh"
bash "$here/docker/status.sh"
if [ -f "$here/k8s/status.sh" ]; then
  bash "$here/k8s/status.sh" || true
fi
exit 0
