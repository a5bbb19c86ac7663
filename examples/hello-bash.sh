#!/bin/bash
#SBATCH --job-name=hello-bash
#SBATCH --cpus-per-task=1
#SBATCH --mem=256M
#SBATCH --output=/mnt/test-k8s/results/%j.out
#K8S_IMAGE=nas-hub.local:5407/alpine:latest

# alpine has no bash: slurm-k8s runs this #!/bin/bash script with its own static bash,
# so the brace expansion below prints ten iterations, as it would on any Slurm node.
for i in {1..10}; do
  echo "Hello from Slurm-K8s! iteration $i"
done
