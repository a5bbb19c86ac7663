#!/usr/bin/env bash
# shellcheck disable=SC2317  # the probes below are called indirectly through line()
# One line per lab Kubernetes component: "<component>: up <version>" or "<component>: down".
# "up" means our process is alive and its health endpoint answers. Always exits 0.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=common.sh
. "$here/common.sh"

bin_version() { "$@" 2>/dev/null | grep -oE 'v?[0-9]+\.[0-9]+\.[0-9]+[^ ]*' | head -n1; }

line() { # NAME EXE HEALTH-FN VERSION-CMD...
  local name=$1 exe=$2 health=$3; shift 3
  if alive "$name" "$exe" && "$health"; then
    echo "$name: up $("$@")"
  else
    echo "$name: down"
  fi
}

etcd_version() { etcd_curl /version | jq -r '"v" + .etcdserver'; }
apiserver_version() { admin_curl "$APISERVER/version" | jq -r .gitVersion; }
kubelet_version() {
  kubectl_admin get node "$LAB_NODE" -o jsonpath='{.status.nodeInfo.kubeletVersion}' 2>/dev/null ||
    bin_version "$K8S_BIN/kubelet" --version
}
containerd_version() { ctr --address "$CTRD_SOCK" version 2>/dev/null | awk '/^Server:/{s=1} s&&/Version:/{print $2; exit}'; }
registry_version() { bin_version /usr/bin/docker-registry --version; }
nginx_version() { /usr/sbin/nginx -v 2>&1 | grep -oE "[0-9]+\.[0-9]+\.[0-9]+" | head -n1; }

line etcd etcd etcd_healthy etcd_version
line kube-apiserver kube-apiserver apiserver_healthy apiserver_version
line kube-controller-manager kube-controller-manager kcm_healthy bin_version "$K8S_BIN/kube-controller-manager" --version
line kube-scheduler kube-scheduler scheduler_healthy bin_version "$K8S_BIN/kube-scheduler" --version
line kubelet kubelet kubelet_healthy kubelet_version
line containerd containerd containerd_healthy containerd_version
line registry docker-registry registry_healthy registry_version
line registry-front nginx registry_front_healthy nginx_version
exit 0
