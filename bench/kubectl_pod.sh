#!/usr/bin/env bash
# Baselines for `make bench`, what the seed's prolog and epilog do with kubectl:
#   kubectl_pod.sh start MANIFEST NAME NS   kubectl apply + kubectl wait until Ready
#   kubectl_pod.sh delete NAME NS           kubectl delete --wait
# Timed from outside (the caller measures this script's wall time).
set -euo pipefail
case $1 in
  start)
    kubectl apply -n "$4" -f "$2" >/dev/null
    kubectl wait --for=condition=Ready "pod/$3" -n "$4" --timeout=120s >/dev/null ;;
  delete)
    kubectl delete pod "$2" -n "$3" --wait=true >/dev/null ;;
  *) echo "usage: $0 start MANIFEST NAME NS | delete NAME NS" >&2; exit 2 ;;
esac
