#!/usr/bin/env bash
# Installs the project's Slurm-side files from the working tree, so an edit is live after
# `make lab`, and the project's Python package into /opt/slurm-k8s/venv for the hooks.
#   --no-venv   files only (lab/slurm/up.sh runs this before slurmctld's first start)
# Runs `scontrol reconfigure` when slurmctld is up and a file it reads changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
umask 022

with_venv=1
[ "${1:-}" = --no-venv ] && with_venv=

changed=
put() {  # put SRC DEST MODE
  [ -f "$1" ] || die "hooks: $1 is missing from the working tree"
  if cmp -s "$1" "$2" && [ "$(stat -c '%a %U' "$2")" = "$3 root" ]; then return 0; fi
  install -D -m "$3" -o root -g root "$1" "$2"
  log "hooks: installed $2"
  changed=1
}
# A Lua syntax error would break every submission: keep the installed, working version and
# say so instead. Debian's job_submit_lua.so links Lua 5.1, so check with 5.1's compiler.
if command -v luac5.1 >/dev/null && ! luac5.1 -p "$REPO_ROOT/slurm/job_submit.lua"; then
  die "hooks: slurm/job_submit.lua does not parse as Lua 5.1 (luac5.1 -p); not installed"
fi
put "$REPO_ROOT/slurm/slurm-k8s.conf" /etc/slurm/slurm-k8s.conf 644
put "$REPO_ROOT/slurm/job_submit.lua" /etc/slurm/job_submit.lua 644
put "$REPO_ROOT/slurm/prolog" /etc/slurm/slurm-k8s/prolog 755
put "$REPO_ROOT/slurm/epilog" /etc/slurm/slurm-k8s/epilog 755
put "$REPO_ROOT/slurm/policy.conf" /etc/slurm-k8s/policy.conf 644

# What prolog/epilog (run by slurmd as root, with a bare environment) need to reach the
# services. Root-only: it holds the broker password.
tmp=$(mktemp)
{
  echo "# Written by lab/slurm/install-hooks.sh; read by /etc/slurm/slurm-k8s/{prolog,epilog}."
  bash "$REPO_ROOT/lab/env.sh" | sed -n -E \
    's/^export (AMQP_URL|NAS_ROOT|KUBECONFIG|REGISTRY|LAB_NODE|SLURMK8S_POLICY)=/\1=/p'
} >"$tmp"
if ! cmp -s "$tmp" /etc/slurm-k8s/services.env; then
  install -D -m 600 -o root -g root "$tmp" /etc/slurm-k8s/services.env
  log "hooks: wrote /etc/slurm-k8s/services.env"
fi
rm -f "$tmp"

if [ -n "$with_venv" ]; then
  venv=/opt/slurm-k8s/venv
  stamp=/opt/slurm-k8s/.installed-hash
  # Content hash of what ends up in the package: a few hundred small files, ~10 ms.
  hash=$(cd "$REPO_ROOT" && find pyproject.toml shared services -type f \
           ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
         | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$hash" ]; then
    log "hooks: installing the slurm-k8s package into $venv"
    [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
    # Non-editable: the hooks run as root but the package must not depend on the checkout
    # (it may live under /root, which the job's users cannot read). Built from a copy so
    # the working tree gets no build/ or egg-info litter.
    src=$(mktemp -d)
    (cd "$REPO_ROOT" && tar -c --exclude=__pycache__ --exclude='*.pyc' \
       pyproject.toml README.md shared services) | tar -C "$src" -x
    pip=("$venv/bin/pip" -q --disable-pip-version-check)
    "${pip[@]}" wheel --no-deps -w "$src/dist" "$src" >/dev/null
    # Same version number, new content: force our wheel in, then let pip add missing deps.
    "${pip[@]}" install --force-reinstall --no-deps "$src"/dist/*.whl
    "${pip[@]}" install "$src"/dist/*.whl
    rm -rf "$src"
    chmod -R a+rX /opt/slurm-k8s
    echo "$hash" >"$stamp"
    log "hooks: package installed ($("$venv/bin/pip" show slurm-k8s 2>/dev/null | sed -n 's/^Version: //p'))"
  fi
fi

if [ -n "$changed" ] && scontrol ping 2>/dev/null | grep -q 'is UP'; then
  log "hooks: scontrol reconfigure"
  scontrol reconfigure
fi
