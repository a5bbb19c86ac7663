#!/usr/bin/env bash
# One line per daemon: `<name>: up <version>` or `<name>: down`. Checks that each answers,
# not just that a process exists. Always exits 0.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"

line() { if [ -n "$2" ]; then echo "$1: up $2"; else echo "$1: down"; fi; }
slurm_version() { scontrol -V 2>/dev/null | awk '{print $2}'; }

v=; munge_up && v=$(munged -V 2>/dev/null | awk '{print $1}' | sed 's/^munge-//')
line munge "$v"
v=; mariadb_up && v=$(mariadb -N -e 'select version()' 2>/dev/null)
line mariadb "$v"
v=; slurmdbd_up && sacctmgr -n -P show cluster format=cluster >/dev/null 2>&1 && v=$(slurm_version)
line slurmdbd "$v"
v=; slurmctld_up && scontrol ping 2>/dev/null | grep -q 'is UP' && v=$(slurm_version)
line slurmctld "$v"
v=
if slurmd_up; then
  state=$(sinfo -h -N -n "$LAB_NODE" -o '%T' 2>/dev/null | head -1)
  v="$(slurm_version) (node $LAB_NODE ${state:-unknown})"
fi
line slurmd "$v"
bash "$here/relay.sh" status
exit 0
