#!/usr/bin/env bash
# `make lab-down`: stops every daemon the lab started; keeps packages, caches, credentials,
# queues, Slurm state and accounting, so `make lab` brings back the same lab.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
rc=0
# The services first: they would only crash-loop without the daemons below.
bash "$here/services.sh" stop || rc=1
bash "$here/docker/down.sh" || rc=1
if [ -f "$here/k8s/down.sh" ]; then
  bash "$here/k8s/down.sh" || rc=1
fi
bash "$here/slurm/down.sh" || rc=1
bash "$here/rabbitmq/down.sh" || rc=1
# epmd was started by the broker; nothing else of the lab uses it.
if command -v epmd >/dev/null && epmd -names >/dev/null 2>&1; then
  [ -z "$(epmd -names 2>/dev/null | sed -n 's/^name //p')" ] && epmd -kill >/dev/null 2>&1 || true
fi
exit $rc
