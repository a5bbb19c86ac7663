#!/usr/bin/env bash
# Builds the lab's slurm-k8s service image for in-cluster launcher/collector Pods (k8s/overlays/lab)
# and pushes it as $REGISTRY/slurm-k8s-services:lab (the overlay's tag) and :lab-<commit>. No docker: the lab's cached bookworm python3
# root filesystem (lab/images/build.sh), Debian's slurm-client (22.05, the lab's own version)
# installed in a chroot, the repository (HEAD) installed into /opt/slurm-k8s/venv with the
# versions of the repo's .venv as constraints, then lab/images/mkoci.py and skopeo like every lab image.
# Usage: lab/k8s/service-image.sh [--force]   (kept when :lab-<HEAD> is already in the registry)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

name=slurm-k8s-services tag=lab
commit_tag="lab-$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD)"
: "${REGISTRY_AUTHFILE:=$LAB_STATE/registry/auth.json}"
base="$LAB_CACHE/images/python3-bookworm-rootfs.tar"
if [ "${1:-}" != --force ] && curl -sf -o /dev/null \
  -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
  "http://$REGISTRY/v2/$name/manifests/$commit_tag"; then
  # :lab is what the overlay runs: make it this commit's build (a copy within the registry).
  skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false \
    --dest-authfile "$REGISTRY_AUTHFILE" \
    "docker://$REGISTRY/$name:$commit_tag" "docker://$REGISTRY/$name:$tag"
  log "service image: $REGISTRY/$name:$commit_tag already in the registry, tagged :$tag"
  exit 0
fi
[ -s "$base" ] || die "service image: $base missing (lab/images/build.sh builds it)"
[ -r "$REGISTRY_AUTHFILE" ] || die "service image: no push credentials at $REGISTRY_AUTHFILE"

work=$(mktemp -d /tmp/lab-service-image.XXXXXX)
root="$work/root"
cleanup() {
  umount "$root/proc" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$root"
tar --numeric-owner -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"

# The Slurm client commands (scontrol, squeue, sacct) and libmunge; munged stays on the host:
# the Pod talks to the node's munge socket.
log "service image: apt-get install slurm-client (a minute)"
chroot "$root" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends slurm-client python3-venv ca-certificates' \
  >"$LAB_LOG/service-image.log" 2>&1 || die "apt-get failed, see $LAB_LOG/service-image.log"

# Wheels are fetched on the host (its pip configuration reaches the package index), then
# installed offline in the chroot.
log "service image: pip wheel the repository and its dependencies, install into /opt/slurm-k8s/venv"
mkdir -p "$root/opt/slurm-k8s/wheels"
"$REPO_ROOT/.venv/bin/pip" freeze --exclude-editable >"$work/constraints.txt"
src="$work/src"
mkdir -p "$src"
git -C "$REPO_ROOT" archive HEAD pyproject.toml shared services | tar -C "$src" -xf -
"$REPO_ROOT/.venv/bin/pip" wheel -q -w "$root/opt/slurm-k8s/wheels" -c "$work/constraints.txt" "$src" \
  >>"$LAB_LOG/service-image.log" 2>&1 || die "pip wheel failed, see $LAB_LOG/service-image.log"
chroot "$root" /bin/sh -c 'python3 -m venv /opt/slurm-k8s/venv && \
  /opt/slurm-k8s/venv/bin/pip install -q --no-index --find-links /opt/slurm-k8s/wheels slurm-k8s' \
  >>"$LAB_LOG/service-image.log" 2>&1 || die "pip install failed, see $LAB_LOG/service-image.log"
umount "$root/proc"
rm -rf "$root/opt/slurm-k8s/wheels" "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
: >"$root/etc/resolv.conf"

tar --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
python3 "$REPO_ROOT/lab/images/mkoci.py" "$work/rootfs.tar" "$work/oci" "$tag" \
  --env PATH=/opt/slurm-k8s/venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
  --env PYTHONUNBUFFERED=1 \
  --label "org.opencontainers.image.title=slurm-k8s services (lab build)" \
  --label "org.opencontainers.image.description=python -m services.<name>; Slurm 22.05 client"
# --dest-authfile, not --dest-creds: a password on the command line is visible in ps.
for t in "$commit_tag" "$tag"; do
  skopeo copy --quiet --format v2s2 --dest-tls-verify=false --dest-authfile "$REGISTRY_AUTHFILE" \
    "oci:$work/oci:$tag" "docker://$REGISTRY/$name:$t"
  log "service image: pushed $REGISTRY/$name:$t"
done
