#!/bin/bash
#SBATCH --job-name=example-train
#SBATCH --partition=gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
#SBATCH --time=00:10:00
#SBATCH --output=/mnt/test-k8s/results/%j.out
#K8S_IMAGE=nas-hub.local:5407/pytorch:2.0-cuda11.8
#K8S_WORKDIR=/workspace
#K8S_SCRIPT=/mnt/test-k8s/scripts/train_model.py

# The seed's sample job, within the lab's limits (2 CPUs, 16 GB, 4 GPUs on one node).
# On the lab, pytorch:2.0-cuda11.8 is a stand-in: Debian's python3, no PyTorch, no CUDA.
# Put the program first: cp examples/scripts/train_model.py /mnt/test-k8s/scripts/
echo "job $SLURM_JOB_ID on $SLURMD_NODENAME in $(pwd), GPUs (Slurm's indices): $SLURM_JOB_GPUS"

python3 "$SLURM_K8S_SCRIPT" --epochs 3 --output /results

# The seed's habit: copy the outputs to the NAS yourself (slurm-k8s also merges /results
# into /mnt/test-k8s/results/$SLURM_JOB_ID/ when the job ends, so nothing is lost without it).
mkdir -p "/mnt/test-k8s/results/$SLURM_JOB_ID"
cp -r /results/* "/mnt/test-k8s/results/$SLURM_JOB_ID/"
echo "results in /mnt/test-k8s/results/$SLURM_JOB_ID/"
