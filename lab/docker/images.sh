#!/usr/bin/env bash
# Builds the project's images with the lab's Docker engine (lab/docker/up.sh), from the same
# Dockerfiles a site uses, on a base made from Debian's packages (no public image registry
# here):
#   slurm-k8s-lab/base:bookworm   debootstrap minbase + python3, python3-venv (docker import),
#                                 trusting the host's CA bundle as the host does (pip, apt)
#   slurm-k8s:dev                 the services (Dockerfile, BASE=the above)
#   slurm-k8s-rabbitmq:dev        RabbitMQ + management from Debian (deploy/rabbitmq/Dockerfile)
#   --push  also copies both to $REGISTRY (for the lab cluster: compose.lab.yaml and the
#           k8s/overlays/lab Deployments), as :dev and as :<image id>
# The build's RUN steps use the host's network (the engine runs without a bridge) to reach
# Debian's archive and PyPI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"
# The deploy tests call this on a machine that may not have run `make compose-demo` yet.
docker_up || bash "$here/up.sh"

base=slurm-k8s-lab/base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  t="$LAB_CACHE/docker/base-bookworm-rootfs.tar"
  if [ ! -s "$t" ]; then
    r=$(mktemp -d /tmp/lab-base.XXXXXX)
    log "images: debootstrap bookworm minbase + python3-venv (a minute or two, first time only)"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$r" http://deb.debian.org/debian >"$LAB_LOG/debootstrap-base.log" 2>&1 \
      || { rm -rf "$r"; die "images: debootstrap failed, see $LAB_LOG/debootstrap-base.log"; }
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
    mkdir -p "$(dirname "$t")"
    tar --numeric-owner -C "$r" -cf "$t.tmp" . && mv "$t.tmp" "$t"
    rm -rf "$r"
  fi
  # This machine reaches PyPI through a TLS-inspecting proxy whose CA only the host's bundle
  # holds; pip in a venv uses its own bundle unless told (the host's pip.conf does the same).
  ca=$(mktemp -d)
  install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$ca/etc/ssl/certs/ca-certificates.crt"
  cp "$t" "$ca/rootfs.tar"
  tar --delete -f "$ca/rootfs.tar" ./etc/ssl/certs/ca-certificates.crt
  tar --numeric-owner --owner=0 --group=0 -C "$ca" -rf "$ca/rootfs.tar" ./etc/ssl/certs/ca-certificates.crt
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' -c 'CMD ["python3"]' \
    "$ca/rootfs.tar" "$base" >/dev/null
  rm -rf "$ca"
  log "images: imported $base"
fi

build() {  # TAG DOCKERFILE
  log "images: building $1"
  nice -n 10 docker build -q --network host --build-arg "BASE=$base" -f "$REPO_ROOT/$2" \
    -t "$1" "$REPO_ROOT" >/dev/null
  log "images: $1 is $(docker image inspect -f '{{.Id}}' "$1" | cut -c8-19)"
}
build slurm-k8s:dev Dockerfile
build slurm-k8s-rabbitmq:dev deploy/rabbitmq/Dockerfile

if [ "${1:-}" = --push ]; then
  : "${REGISTRY_AUTHFILE:=$LAB_STATE/registry/auth.json}"
  [ -r "$REGISTRY_AUTHFILE" ] || die "images: no push credentials at $REGISTRY_AUTHFILE (lab/k8s/up.sh)"
  for name in slurm-k8s slurm-k8s-rabbitmq; do
    id=$(docker image inspect -f '{{.Id}}' "$name:dev" | cut -c8-19)
    # Already pushed (an unchanged build): point :dev at it within the registry, which is
    # cheap, instead of copying the whole image again (tests/integration/deploy runs this).
    if curl -sf -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$REGISTRY/v2/$name/manifests/$id"; then
      skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
        --dest-authfile "$REGISTRY_AUTHFILE" "docker://$REGISTRY/$name:$id" "docker://$REGISTRY/$name:dev"
      log "images: $REGISTRY/$name:$id already pushed, tagged :dev"
      continue
    fi
    for tag in dev "$id"; do
      skopeo copy --quiet --format v2s2 --dest-tls-verify=false \
        --dest-authfile "$REGISTRY_AUTHFILE" "docker-daemon:$name:dev" "docker://$REGISTRY/$name:$tag"
      log "images: pushed $REGISTRY/$name:$tag"
    done
  done
fi
