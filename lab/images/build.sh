#!/usr/bin/env bash
# Builds the lab's base images without any public registry and pushes them to $REGISTRY:
#   $REGISTRY/alpine:latest  busybox-static root (a stand-in for alpine: /bin/sh and applets)
#   $REGISTRY/python:3       Debian bookworm minbase with python3 (3.11), also tagged python:3.11
#   $REGISTRY/pytorch:2.0-cuda11.8  a STAND-IN for the seed's sample image: the same Debian
#                            python3, no PyTorch, no CUDA (labelled so, and /STAND-IN.txt says so)
#   $REGISTRY/pause:3.10     Kubernetes' own pause.c, compiled statically (sandbox image)
# Images already in the registry are left alone; root filesystems are cached in $LAB_CACHE.
# Needs the registry answering at $REGISTRY (lab/k8s/up.sh starts it first) and its push
# credentials in $REGISTRY_AUTHFILE (skopeo's auth.json; up.sh makes it, root-only): anonymous
# clients may pull but not push.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

: "${REGISTRY_AUTHFILE:=$LAB_STATE/registry/auth.json}"
cache="$LAB_CACHE/images"
mkdir -p "$cache"
work=$(mktemp -d /tmp/lab-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Images are stored as Docker schema 2: distribution 2.8 answers 404 to clients that do not
# accept OCI manifests, so an OCI-stored image (older lab runs) counts as absent and is re-pushed.
in_registry() { # NAME TAG
  curl -sf -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/$1/manifests/$2"
}

root_tar() { # DIR OUT.tar — numeric root ownership so the layer does not depend on host names
  tar --numeric-owner -C "$1" -cf "$2.tmp" . && mv "$2.tmp" "$2"
}

push() { # ROOTFS.tar NAME TAG [mkoci args...]
  local tarball=$1 name=$2 tag=$3; shift 3
  python3 "$here/mkoci.py" "$tarball" "$work/$name" "$tag" "$@"
  [ -r "$REGISTRY_AUTHFILE" ] || die "images: no push credentials at $REGISTRY_AUTHFILE (lab/k8s/up.sh makes them)"
  # --dest-authfile, not --dest-creds: a password on the command line is visible in ps.
  skopeo copy --quiet --format v2s2 --dest-tls-verify=false --dest-authfile "$REGISTRY_AUTHFILE" \
    "oci:$work/$name:$tag" "docker://$REGISTRY/$name:$tag"
  log "images: pushed $REGISTRY/$name:$tag"
}

build_alpine() {
  local t="$cache/busybox-rootfs.tar" r="$work/busybox-root"
  if [ ! -s "$t" ] || [ /bin/busybox -nt "$t" ]; then
    mkdir -p "$r"/{bin,etc,tmp,root,home,proc,sys,dev,usr/bin,sbin,usr/sbin}
    cp /bin/busybox "$r/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
      [ "$applet" = busybox ] || ln -sf busybox "$r/bin/$applet"
    done
    chmod 1777 "$r/tmp"
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
      'alice:x:2001:2001:alice:/tmp:/bin/sh' 'bob:x:2002:2002:bob:/tmp:/bin/sh' > "$r/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nasusers:x:2000:alice,bob' 'alice:x:2001:' 'bob:x:2002:' 'nogroup:x:65534:' > "$r/etc/group"
    root_tar "$r" "$t"
  fi
  push "$t" alpine latest --cmd '["/bin/sh"]' --env PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
}

build_python_rootfs() {
  local t="$cache/python3-bookworm-rootfs.tar" r="$work/python-root"
  if [ ! -s "$t" ]; then
    log "images: debootstrap bookworm minbase + python3 (about a minute, first time only)"
    debootstrap --variant=minbase --include=python3 bookworm "$r" http://deb.debian.org/debian \
      > "$LAB_LOG/debootstrap.log" 2>&1 || die "debootstrap failed, see $LAB_LOG/debootstrap.log"
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
    root_tar "$r" "$t"
  fi
}

build_python() {
  build_python_rootfs
  push "$cache/python3-bookworm-rootfs.tar" python 3 --cmd '["python3"]'
}

build_python311() { # the same root filesystem as python:3 (bookworm's python3 is 3.11)
  build_python_rootfs
  push "$cache/python3-bookworm-rootfs.tar" python 3.11 --cmd '["python3"]'
}

build_pytorch_standin() {
  build_python_rootfs
  local t="$cache/pytorch-standin-rootfs.tar" r="$work/standin"
  mkdir -p "$r"
  printf '%s\n' "This image is a lab stand-in for the seed's nas-hub.local:5407/pytorch:2.0-cuda11.8." \
    "It is Debian bookworm's python3 only: no PyTorch, no CUDA. Built by slurm-k8s lab/images/build.sh." \
    > "$r/STAND-IN.txt"
  cp "$cache/python3-bookworm-rootfs.tar" "$t.tmp"
  tar --numeric-owner --owner=0 --group=0 -C "$r" -rf "$t.tmp" ./STAND-IN.txt && mv "$t.tmp" "$t"
  push "$t" pytorch 2.0-cuda11.8 --cmd '["python3"]' \
    --label "org.opencontainers.image.title=pytorch:2.0-cuda11.8 lab stand-in" \
    --label "org.opencontainers.image.description=STAND-IN without PyTorch and without CUDA: Debian python3 only" \
    --label "slurm-k8s.lab/stand-in=true"
}

build_pause() {
  local t="$cache/pause-rootfs.tar" r="$work/pause-root"
  local src="${GOMODCACHE:-$(go env GOMODCACHE)}/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
  if [ ! -s "$t" ]; then
    [ -f "$src" ] || die "pause.c not found at $src (run lab/k8s/build.sh first)"
    mkdir -p "$r"
    gcc -Os -static -DVERSION=lab -o "$r/pause" "$src"
    strip "$r/pause"
    root_tar "$r" "$t"
  fi
  push "$t" pause 3.10 --entrypoint '["/pause"]'
}

mkdir -p "$LAB_LOG"
for spec in alpine:latest:build_alpine python:3:build_python python:3.11:build_python311 \
  pytorch:2.0-cuda11.8:build_pytorch_standin pause:3.10:build_pause; do
  IFS=: read -r name tag fn <<<"$spec"
  if in_registry "$name" "$tag"; then
    log "images: $REGISTRY/$name:$tag already in the registry"
  else
    "$fn"
  fi
done
