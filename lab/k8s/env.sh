#!/usr/bin/env bash
# Prints the shell settings for using the lab cluster: eval "$(lab/k8s/env.sh)".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=common.sh
. "$here/common.sh"
echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
echo "export REGISTRY=$REGISTRY"
# The built kubectl matches the cluster; it goes first so an older system kubectl is not used.
echo "export PATH=$K8S_BIN:\$PATH"
