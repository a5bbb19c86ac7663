#!/bin/bash
#SBATCH --job-name=hello
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --output=/mnt/test-k8s/results/%j.out
#K8S_IMAGE=nas-hub.local:5407/alpine:latest

echo "Hello from Slurm-K8s!"
