#!/usr/bin/env bash
# Baselines for `make bench`, what the seed's prolog, batch step and epilog do with kubectl:
#   kubectl_pod.sh start MANIFEST NAME NS   kubectl apply + kubectl wait until Ready
#   kubectl_pod.sh delete NAME NS           kubectl delete --wait
#   kubectl_pod.sh end NAME NS              kubectl wait until the Pod's phase is Succeeded
#                                           (its container ended), then kubectl delete --wait
# Timed from outside (the caller measures this script's wall time, or its end).
set -euo pipefail
case $1 in
  start)
    kubectl apply -n "$4" -f "$2" >/dev/null
    kubectl wait --for=condition=Ready "pod/$3" -n "$4" --timeout=120s >/dev/null ;;
  delete)
    kubectl delete pod "$2" -n "$3" --wait=true >/dev/null ;;
  end)
    kubectl wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$2" -n "$3" --timeout=120s \
      >/dev/null
    kubectl delete pod "$2" -n "$3" --wait=true >/dev/null ;;
  *) echo "usage: $0 start MANIFEST NAME NS | delete NAME NS | end NAME NS" >&2; exit 2 ;;
esac
