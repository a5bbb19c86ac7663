#!/usr/bin/env bash
# One line for `make lab-status`: the Docker engine and the compose plugin.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"
if docker_up; then
  echo "docker: up $(docker version -f '{{.Server.Version}}' 2>/dev/null), compose $("$DOCKER_PLUGINS/docker-compose" version --short 2>/dev/null || echo missing)"
else
  echo "docker: down"
fi
