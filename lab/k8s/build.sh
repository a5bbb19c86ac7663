#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane, kubelet and etcd from the Go module proxy.
#
# k8s.io/kubernetes is not meant to be consumed as a module: its go.mod points every staging
# module (k8s.io/api, k8s.io/client-go, ...) at ./staging/src. A module of our own that requires
# it builds once each staging module is pinned to its published twin v0.X.Y, which is what this
# script writes. Output: $LAB_CACHE/k8s/$K8S_VERSION/bin, reused as-is on the next run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"

version=${K8S_VERSION:?}
out="$LAB_CACHE/k8s/$version"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd fake-gpu-plugin)
# The marker alone is not trusted: a binary added to the list later must still get built.
all_built() { local b; for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || return 1; done; }
# The plugin's source is in this repo: a changed source means that one binary is rebuilt.
if ! cmp -s "$here/fake-gpu-plugin/main.go" "$out/src/cmd/fake-gpu-plugin/main.go"; then
  rm -f "$out/bin/fake-gpu-plugin"
fi
# Without these -X stamps every component reports v0.0.0-master (node status, /version).
kminor=${version#v1.}; kminor=${kminor%%.*}
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$kminor"
ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z"
# .complete records how the binaries were made; a different recipe relinks them (the Go build
# cache keeps this to seconds per binary when only the stamps changed).
recipe="ldflags=$ldflags"
if [ -f "$out/.complete" ] && [ "$(cat "$out/.complete")" != "$recipe" ]; then
  log "kubernetes $version: build recipe changed, relinking"
  rm -f "$out/.complete" "${bins[@]/#/$out/bin/}"
fi
if [ -f "$out/.complete" ] && all_built; then
  log "kubernetes $version: cached in $out/bin"
  exit 0
fi
mkdir -p "$out/src/cmd/etcd" "$out/src/cmd/fake-gpu-plugin" "$out/bin"
cd "$out/src"

log "kubernetes $version: fetching the module and its go.mod"
modinfo=$(go mod download -json "k8s.io/kubernetes@$version")
upstream_mod=$(printf '%s' "$modinfo" | jq -r .GoMod)
minor=${version#v1.}

{
  echo "module slurmk8s.local/labk8s"
  echo
  grep -m1 '^go ' "$upstream_mod"
  echo
  echo "require k8s.io/kubernetes $version"
  echo
  # Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.<minor>".
  sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 v0.'"$minor"'#p' "$upstream_mod"
} > go.mod

# etcd ships no main package we can `go build` by path from a dependency; etcdmain.Main is
# what its own main.go calls, so this three-line program is the real etcd server.
cat > cmd/etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)
GO

# The fake GPU device plugin lives in the repo but builds inside this module so it shares
# the pinned k8s.io/kubelet and grpc versions.
cp "$here/fake-gpu-plugin/main.go" cmd/fake-gpu-plugin/main.go

log "kubernetes $version: resolving modules (go mod tidy)"
GOFLAGS=-mod=mod go mod tidy

for b in "${bins[@]}"; do
  if [ -x "bin/$b" ] || [ -x "$out/bin/$b" ]; then continue; fi
  pkg="k8s.io/kubernetes/cmd/$b"
  case $b in etcd|fake-gpu-plugin) pkg=./cmd/$b ;; esac
  log "kubernetes $version: building $b (several minutes on 2 cores)"
  start=$(date +%s)
  CGO_ENABLED=0 go build -trimpath -ldflags="$ldflags" -o "$out/bin/$b" "$pkg"
  log "kubernetes $version: built $b in $(( $(date +%s) - start )) s"
done
printf '%s' "$recipe" > "$out/.complete"
log "kubernetes $version: all binaries in $out/bin"
