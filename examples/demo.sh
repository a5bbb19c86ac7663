#!/usr/bin/env bash
# The seed's first job, end to end, through both doors: a file dropped in the NAS submit folder
# and plain `sbatch`, both as the lab user alice. Prints each job's output file and Slurm's view.
# Run by `make demo` after `make lab`; expects the lab environment (source <(bash lab/env.sh)).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
: "${NAS_ROOT:?source the lab env first: source <(bash lab/env.sh)}"
user=${DEMO_USER:-alice}

# The services stay up afterwards (supervised; `make down` stops them), so the next file
# dropped into submit/ is picked up. DEMO_SERVICES=running: someone else runs them
# (`make compose-demo` runs them in containers).
services=${DEMO_SERVICES:-lab}
[ "$services" = running ] || bash "$repo/lab/services.sh" start

wait_for() {  # wait_for SECONDS CMD...: poll until CMD succeeds
  local deadline=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

show_job() {
  local id=$1 out="$NAS_ROOT/results/$1.out"
  finished() { sacct -j "$id" -X -n -o State | grep -qvE 'PENDING|RUNNING|REQUEUED|^\s*$'; }
  wait_for 300 finished || { echo "job $id did not finish"; scontrol show job "$id"; return 1; }
  echo "---- $out ($(stat -c %U "$out"))"
  cat "$out"
  echo "---- $out.summary.json (written by the collector)"
  wait_for 60 test -f "$out.summary.json" && cat "$out.summary.json"
  echo "---- sacct"
  sacct -j "$id" -X -o JobID,User,State,ExitCode,NodeList,AllocTRES%40
}

name="hello-$(date +%s).sh"
echo "== door 1: $user copies hello.sh into $NAS_ROOT/slurm-jobs/submit/$name"
runuser -u "$user" -- cp "$repo/examples/hello.sh" "$NAS_ROOT/slurm-jobs/submit/$name"
receipt="$NAS_ROOT/slurm-jobs/submitted/$name.receipt.json"
wait_for 120 test -f "$receipt" || {
  echo "no receipt; failed/ has:"; ls "$NAS_ROOT/slurm-jobs/failed/"; exit 1; }
cat "$receipt"; echo
nas_job=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["job_id"])' "$receipt")

echo "== door 2: $user runs sbatch hello.sh"
sbatch_job=$(cd "$NAS_ROOT/home/$user" && runuser -u "$user" -- sbatch --parsable < "$repo/examples/hello.sh")
echo "submitted job $sbatch_job"

show_job "$nas_job"
show_job "$sbatch_job"
for id in "$nas_job" "$sbatch_job"; do
  left=$(kubectl get pods -n slurm-jobs -l "slurm-k8s.io/job-id=$id" --no-headers 2>/dev/null | wc -l)
  echo "== Pods left for job $id: $left"
done
if [ "$services" != running ]; then
  echo "== The system is still running: copy a job file into $NAS_ROOT/slurm-jobs/submit/ (as"
  echo "   its owner) or sbatch one. \`bash lab/services.sh status\` shows the services, \`make down\` stops them."
fi
