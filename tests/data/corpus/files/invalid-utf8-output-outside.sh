#!/bin/bash
#SBATCH --hold
#SBATCH --output=/etc/ÿ.out
#K8S_IMAGE=nas-hub.local:5407/alpine:latest
echo hello
