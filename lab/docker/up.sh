#!/usr/bin/env bash
# Docker for `make compose-demo` and the service image: Debian's docker.io engine started by
# hand (no systemd here) and a compose v2 CLI plugin. Not part of `make lab`: the rest of the
# lab needs no Docker. Idempotent; `lab/docker/down.sh` stops the engine.
#
# The engine runs with --iptables=false and no default bridge: Docker's iptables rules set the
# FORWARD policy to DROP, which would cut the lab cluster's Pod network (CNI bridge) off. The
# lab's containers use the host's network instead (compose.lab.yaml), which is also how they
# reach the lab's loopback-only slurmctld, API server and registry.
#
# Debian 12's docker-compose is v1 (1.29); compose v2 is built once from the Go module proxy
# (~5 min on 2 cores, niced) and cached in $LAB_CACHE/docker.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"

if ! command -v dockerd >/dev/null; then
  log "docker: installing docker.io"
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_InRelease' -mmin -360 2>/dev/null | head -1)" ] \
    || apt-get update -q
  # Package defaults must not start an engine with iptables on (see above).
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  apt-get install -y -q --no-install-recommends docker.io || rc=$?
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || die "docker: apt-get install docker.io failed ($rc)"
fi

if ! docker_up; then
  mkdir -p "$DOCKER_STATE" "$LAB_LOG"
  log "docker: starting dockerd (log $LAB_LOG/dockerd.log)"
  ( lab_close_fds
    exec setsid dockerd --host "unix://$DOCKER_SOCK" --pidfile "$DOCKER_PID" \
      --data-root /var/lib/docker --iptables=false --ip6tables=false --bridge=none \
      >>"$LAB_LOG/dockerd.log" 2>&1 </dev/null ) &
  for _ in $(seq 1 60); do docker_up && break; sleep 1; done
  docker_up || die "docker: dockerd did not answer, see $LAB_LOG/dockerd.log"
fi

plugin=$DOCKER_PLUGINS/docker-compose
if ! "$plugin" version 2>/dev/null | grep -q "v$COMPOSE_VERSION"; then
  bin="$LAB_CACHE/docker/docker-compose-v$COMPOSE_VERSION"
  if [ ! -x "$bin" ]; then
    command -v go >/dev/null || die "docker: Go is needed to build compose v$COMPOSE_VERSION"
    log "docker: building compose v$COMPOSE_VERSION from the Go module proxy (niced, minutes)"
    dir=$(go mod download -json "github.com/docker/compose/v2@v$COMPOSE_VERSION" \
          | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    # `go install mod@version` refuses modules whose go.mod has exclude directives (compose's
    # has): build in a writable copy of the module instead.
    src=$(mktemp -d)
    cp -r "$dir/." "$src" && chmod -R u+w "$src"
    (cd "$src" && nice -n 10 go build -trimpath \
       -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=v$COMPOSE_VERSION" \
       -o "$bin.tmp" ./cmd) >"$LAB_LOG/compose-build.log" 2>&1 \
      || { rm -rf "$src"; die "docker: compose build failed, see $LAB_LOG/compose-build.log"; }
    rm -rf "$src"
    mv "$bin.tmp" "$bin"
  fi
  install -D -m 755 "$bin" "$plugin"
  log "docker: compose plugin $("$plugin" version --short)"
fi
log "docker: ready ($(docker version -f '{{.Server.Version}}') engine, compose $("$plugin" version --short))"
