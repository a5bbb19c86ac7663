#!/usr/bin/env bash
# Installs the project's Slurm-side files from the working tree with the node installer a site
# uses (slurm/install.sh), so an edit is live after `make lab` and the installer is tested by
# every lab run. The lab's own choices: the repo's policy replaces the installed one, and
# services.env comes from the lab's settings.
#   --no-venv   files only (lab/slurm/up.sh runs this before slurmctld's first start)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"

args=()
[ "${1:-}" = --no-venv ] && args+=(--no-venv)

# What prolog/epilog (run by slurmd as root, with a bare environment) need to reach the
# services.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
  echo "# Written by lab/slurm/install-hooks.sh; read by /etc/slurm/slurm-k8s/{prolog,epilog}."
  bash "$REPO_ROOT/lab/env.sh" | sed -n -E \
    's/^export (AMQP_URL|NAS_ROOT|KUBECONFIG|REGISTRY|LAB_NODE|SLURMK8S_POLICY)=/\1=/p'
} >"$tmp"
# The check's lines go to the lab log only; a failed check fails `make lab`.
out=$(bash "$REPO_ROOT/slurm/install.sh" --env "$tmp" --policy "$REPO_ROOT/slurm/policy.conf" \
        "${args[@]}") || { echo "$out" >&2; die "hooks: slurm/install.sh failed its check"; }
log "hooks: slurm/install.sh: $(tail -1 <<<"$out")"
# The relay runs the installed package: a reinstalled one is picked up by a restart. Events
# spooled meanwhile are published by their hooks (no relay holds the outbox then).
[ "${1:-}" = --no-venv ] || bash "$here/relay.sh" restart
