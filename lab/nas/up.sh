#!/usr/bin/env bash
# The NAS stand-in: lab users and the folder tree under $NAS_ROOT. Idempotent; fixes modes
# and owners on every run so a hand-edited tree is put back.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"

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
