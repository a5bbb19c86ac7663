#!/bin/bash
#SBATCH --hold
#SBATCH --output=/mnt/test-k8s/results/%u-%j.out
#K8S_IMAGE=nas-hub.local:5407/alpine;id
echo hello
