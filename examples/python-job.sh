#!/bin/bash
#SBATCH --job-name=python-job
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --output=/mnt/test-k8s/results/%j.out
#K8S_IMAGE=nas-hub.local:5407/python:3.11
#K8S_SCRIPT=/mnt/test-k8s/scripts/analyze.py

# No command below the directives: slurm-k8s runs #K8S_SCRIPT itself (here with python3, from
# its #! line), starting in /workspace. Put the program first:
#   cp examples/scripts/analyze.py /mnt/test-k8s/scripts/
