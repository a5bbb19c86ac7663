#!/usr/bin/env bash
# One line: `nas: up <root> (<size>)` when it is mounted and users and the tree are in place,
# else `nas: down`.
set -uo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/lib.sh"
ok=1
for entry in $LAB_USERS; do
  user=${entry%%:*}
  getent passwd "$user" >/dev/null && [ -d "$NAS_ROOT/home/$user" ] || ok=
done
for d in slurm-jobs/submit slurm-jobs/failed slurm-jobs/submitted slurm-jobs/.state results; do
  [ -d "$NAS_ROOT/$d" ] || ok=
done
mountpoint -q "$NAS_ROOT" || ok=  # a filesystem of its own (lab/nas/up.sh), not a folder
if [ -n "$ok" ]; then echo "nas: up $NAS_ROOT ($(df -h --output=size "$NAS_ROOT" | tail -1 | tr -d ' '))"; else echo "nas: down"; fi
