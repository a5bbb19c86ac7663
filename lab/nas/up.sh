#!/usr/bin/env bash
# The NAS stand-in: lab users and the folder tree under $NAS_ROOT. Idempotent; fixes modes
# and owners on every run so a hand-edited tree is put back.
#
# $NAS_ROOT is a filesystem of its own, like a real NAS mount: an ext4 image of bounded size
# ($NAS_SIZE, sparse: it takes only what is written) loop-mounted there. So "the NAS is full"
# is a real ENOSPC that tests can cause, and the seed's `mountpoint -q /mnt/test-k8s` passes.
# A plain folder with content at $NAS_ROOT (a lab from before, or written while unmounted) is
# migrated: copied into the image (owners, modes, links, sparse files kept), then moved aside
# to $LAB_STATE/nas/pre-loop-<time> rather than deleted.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
: "${NAS_IMAGE:=$LAB_STATE/nas/nas.img}"
: "${NAS_SIZE:=8G}"

nas_mount() {
  mountpoint -q "$NAS_ROOT" && return 0
  mkdir -p "$(dirname "$NAS_IMAGE")"
  if [ ! -f "$NAS_IMAGE" ]; then
    # -m 0: no blocks reserved for root, the services (root) fill it as users would.
    truncate -s "$NAS_SIZE" "$NAS_IMAGE.new"
    mkfs.ext4 -q -F -m 0 -L slurmk8s-nas "$NAS_IMAGE.new"
    mv "$NAS_IMAGE.new" "$NAS_IMAGE"
    log "nas: made $NAS_IMAGE ($NAS_SIZE ext4)"
  fi
  mkdir -p "$NAS_ROOT"
  if [ -n "$(ls -A "$NAS_ROOT")" ]; then
    local stage aside
    stage=$(mktemp -d)
    mount -o loop "$NAS_IMAGE" "$stage"
    if ! cp -a --sparse=always "$NAS_ROOT/." "$stage/"; then
      umount "$stage"
      die "nas: copying $NAS_ROOT into $NAS_IMAGE failed; nothing was moved"
    fi
    umount "$stage"
    rmdir "$stage"
    aside="$LAB_STATE/nas/pre-loop-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$aside"
    # Move the content, not the folder: a shell or a process may hold $NAS_ROOT itself.
    find "$NAS_ROOT" -mindepth 1 -maxdepth 1 -exec mv -t "$aside" {} +
    log "nas: migrated the plain folder $NAS_ROOT into $NAS_IMAGE (old content in $aside)"
  fi
  mount -o loop "$NAS_IMAGE" "$NAS_ROOT"
  log "nas: $NAS_IMAGE mounted at $NAS_ROOT"
}
nas_mount

getent group nasusers >/dev/null || groupadd -g "$LAB_NAS_GID" nasusers
for entry in $LAB_USERS; do
  user=${entry%%:*} id=${entry##*:}
  getent group "$user" >/dev/null || groupadd -g "$id" "$user"
  if ! getent passwd "$user" >/dev/null; then
    useradd -u "$id" -g "$id" -G nasusers -m -s /bin/bash "$user"
    log "nas: created user $user ($id)"
  else
    id -nG "$user" | tr ' ' '\n' | grep -qx nasusers || usermod -aG nasusers "$user"
  fi
done

# mode owner path
tree=(
  "0755 root:root ."
  "0755 root:root slurm-jobs"
  "1777 root:root slurm-jobs/submit"
  "0755 root:root slurm-jobs/failed"
  "0755 root:root slurm-jobs/submitted"
  "0711 root:root slurm-jobs/.state"
  "1777 root:root results"
  "1777 root:root scripts"  # users' programs named by #K8S_SCRIPT (the seed's /mnt/test-k8s/scripts/)
  "0755 root:root home"
)
for entry in $LAB_USERS; do
  user=${entry%%:*}
  tree+=("0750 $user:$user home/$user")
done
for t in "${tree[@]}"; do
  read -r mode owner path <<<"$t"
  d="$NAS_ROOT/$path"
  mkdir -p "$d"
  chown "$owner" "$d"
  chmod "$mode" "$d"
done
# The tools every job Pod runs its script with (services/launcher/tools.py): Debian's
# bash-static and busybox-static, root's and read-only, mounted from the NAS into each Pod.
tools="$NAS_ROOT/slurm-jobs/.tools"
install -d -m 0755 -o root -g root "$tools"
install -m 0555 -o root -g root /bin/bash-static "$tools/bash"
install -m 0555 -o root -g root /bin/busybox "$tools/busybox"
log "nas: $NAS_ROOT ready"
