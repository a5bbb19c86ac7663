#!/bin/sh
# The service image's entrypoint: the first argument picks the service (Dockerfile).
set -eu
case "${1:-help}" in
  watcher|validator|launcher|collector) exec python -m "services.$1" ;;
  health) exec python -m shared.health ;;
  slurmk8s) shift; exec slurmk8s "$@" ;;
  *)
    echo "usage: IMAGE watcher|validator|launcher|collector | health | slurmk8s ARGS..." >&2
    exit 2 ;;
esac
