#!/bin/bash
#SBATCH --hold
#SBATCH --output=/mnt/test-k8s/results/%u-%j.out
#K8S_IMAGE=nas-hub.lоcal:5407/alpine
echo hello
