# Shared helpers and settings for the lab scripts; sourced, never run.
# Every setting can be overridden from the environment; `make lab-env` prints the results.
LAB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_ROOT/.." && pwd)
: "${LAB_CACHE:=/var/cache/slurm-k8s-lab}"
: "${LAB_STATE:=/var/lib/slurm-k8s-lab}"
: "${LAB_LOG:=/var/log/slurm-k8s-lab}"
: "${K8S_VERSION:=v1.37.2}"
: "${NAS_ROOT:=/mnt/test-k8s}"
: "${REGISTRY:=nas-hub.local:5407}"
export LAB_CACHE LAB_STATE LAB_LOG K8S_VERSION NAS_ROOT REGISTRY

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# The node's Slurm name and its Kubernetes node name are the same string.
: "${LAB_NODE:=$(hostname -s)}"
export LAB_NODE
# Unprivileged lab users (fixed ids so tests and the NAS agree across machines).
LAB_USERS="alice:2001 bob:2002"
LAB_NAS_GID=2000   # group "nasusers": both users, owner group of the NAS tree
# Four fake GPUs shared by Slurm (gres.conf File=) and Kubernetes (the fake-gpu device plugin).
# They are null-device character nodes (major 1, minor 3): openable, harmless, and real device
# files so both schedulers' device handling (cgroup device rules, DeviceSpecs) is exercised.
: "${LAB_GPU_FILES:=/dev/fakegpu0 /dev/fakegpu1 /dev/fakegpu2 /dev/fakegpu3}"
export LAB_GPU_FILES
lab_make_gpu_devices() {
  local f
  for f in $LAB_GPU_FILES; do
    if [ ! -c "$f" ]; then
      rm -f "$f"
      mknod -m 0666 "$f" c 1 3
    fi
  done
}
# The machine's Go toolchain (>= 1.26 for Kubernetes v1.37) may not be on a non-login PATH.
case ":$PATH:" in *:/usr/local/go/bin:*) ;; *) [ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH ;; esac
export PATH
# Daemons started from a lab script inherit its open files: one started under
# `flock LOCK make ...` would hold LOCK for as long as it lives. Call in the daemon's subshell
# before exec: closes every descriptor above stderr.
lab_close_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
}
