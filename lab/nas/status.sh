#!/usr/bin/env bash
# One line: `nas: up <root>` when users and the tree are in place, else `nas: down`.
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
if [ -n "$ok" ]; then echo "nas: up $NAS_ROOT"; else echo "nas: down"; fi
