# shellcheck shell=bash disable=SC2034  # variables are for the scripts that source this
# Sourced by the lab/docker scripts.
DOCKER_STATE="$LAB_STATE/docker"
DOCKER_SOCK=/var/run/docker.sock
DOCKER_PID="$DOCKER_STATE/dockerd.pid"
# Where the docker CLI (Debian's, or a newer one on PATH) looks for plugins.
DOCKER_PLUGINS=/usr/local/lib/docker/cli-plugins
COMPOSE_VERSION=2.40.3
docker_up() { timeout 10 docker -H "unix://$DOCKER_SOCK" info >/dev/null 2>&1; }
