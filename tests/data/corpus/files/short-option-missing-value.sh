#!/bin/bash
#SBATCH --hold
#K8S_IMAGE=nas-hub.local:5407/alpine:latest
#SBATCH -c
echo hello
