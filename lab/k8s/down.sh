#!/usr/bin/env bash
# Stops the lab's Kubernetes and everything lab/k8s/up.sh started: device plugin, kubelet, pod
# processes and their shims, control plane, etcd, containerd, the registry and its front;
# unmounts what pods left mounted. Keeps the caches and state (binaries, images, etcd data,
# PKI, registry credentials) so up.sh is quick.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=common.sh
. "$here/common.sh"
[ "$(id -u)" = 0 ] || die "k8s: run as root"
lab_k8s_lock

stop() { # NAME EXE-PATH
  stop_daemon "$1" "$(basename "$2")"
  kill_orphans "$2"
}

# Kubelet first, so nothing restarts pods while they are being stopped.
stop fake-gpu-plugin "$K8S_BIN/fake-gpu-plugin"
stop kubelet "$K8S_BIN/kubelet"

# Pod containers: kill their tasks through containerd while it still runs.
if containerd_healthy; then
  tasks=$(ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null || true)
  for t in $tasks; do
    ctr --address "$CTRD_SOCK" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
  done
  for t in $tasks; do
    for _ in $(seq 1 25); do
      ctr --address "$CTRD_SOCK" -n k8s.io tasks delete "$t" >/dev/null 2>&1 && break
      sleep 0.2
    done
  done
  [ -z "$tasks" ] || log "k8s: killed $(echo "$tasks" | wc -w) pod container(s)"
fi
# Whatever still runs in the kubelet's pod cgroups is a pod process that lost its shim.
find /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods -name cgroup.procs 2>/dev/null |
  while read -r procs; do
    while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$procs"
  done

stop kube-scheduler "$K8S_BIN/kube-scheduler"
stop kube-controller-manager "$K8S_BIN/kube-controller-manager"
stop kube-apiserver "$K8S_BIN/kube-apiserver"
stop etcd "$K8S_BIN/etcd"
stop containerd /usr/bin/containerd

# Shims of our containerd (they outlive it by design); matched by our socket path.
for d in /proc/[0-9]*; do
  [ "$(basename "$(readlink "$d/exe" 2>/dev/null)")" = containerd-shim-runc-v2 ] || continue
  if tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -qF "$CTRD_SOCK"; then
    kill -9 "${d#/proc/}" 2>/dev/null || true
  fi
done

stop registry-front /usr/sbin/nginx
stop registry /usr/bin/docker-registry

# Mounts left by pods: kubelet volumes (tokens, the NAS bind), container rootfs and shm, and
# CNI network namespaces. Deepest first.
awk '{print $5}' /proc/self/mountinfo |
  grep -E "^($KUBELET_ROOT$|$KUBELET_ROOT/|$CTRD_RUN/|$CTRD_DIR/|/run/netns/cni-|/var/run/netns/cni-)" |
  sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "k8s: could not unmount $m"
  done
rm -f /run/netns/cni-* 2>/dev/null || true
# Every pod is gone, so are its addresses; stale leases would slowly exhaust the pod subnet.
rm -rf "$LAB_STATE/cni/ipam"
ip link del cni-lab0 2>/dev/null || true
ip addr del "$LAB_NODE_IP/32" dev lo 2>/dev/null || true
log "k8s: down (caches kept in $LAB_CACHE, state in $LAB_STATE)"
