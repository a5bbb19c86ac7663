#!/bin/bash
#SBATCH --hold
#SBATCH --output=/etc/x
#K8S_IMAGE=nas-hub.local:5407/alpine:latest
echo hello
