#!/usr/bin/env bash
# Baseline for `make bench`: a user's serial loop of plain sbatch, N times the same script
# (the script itself says --hold, so nothing runs). Prints the job ids, one a line.
#   raw_sbatch.sh USER N SCRIPT
set -euo pipefail
user=$1 n=$2 script=$3
cd "/mnt/test-k8s/home/$user"
runuser -u "$user" -- bash -c '
  for _ in $(seq "$1"); do sbatch --parsable <"$2"; done' _ "$n" "$script"
