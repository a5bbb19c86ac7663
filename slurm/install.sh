#!/usr/bin/env bash
# Installs slurm-k8s on a Slurm node (the seed's install.sh, done right). Run as root from a
# checkout, on the controller and on every compute node; running it again changes nothing
# unless a source file changed. What it installs:
#   /opt/slurm-k8s/venv            the Python package: the runner (batch step of #K8S_IMAGE
#                                  jobs) and the hooks behind the prolog and epilog
#   /etc/slurm/slurm-k8s/{prolog,epilog}   Slurm's Prolog= and Epilog= scripts
#   /etc/slurm/job_submit.lua      the sbatch door's checks (the same policy as the NAS door)
#   /etc/slurm/slurm-k8s.conf      the slurm.conf settings, pulled in by one Include line
#   /etc/slurm-k8s/policy.conf     the submit policy; a site's edited copy is kept
#   /etc/slurm-k8s/services.env    what the hooks need (AMQP_URL, NAS_ROOT), root-only
#   slurm-k8s-hook-relay.service   the node's hook relay, where systemd runs (started, and
#                                  restarted when the package changed)
# then prints the slurm.conf lines still missing and checks everything it installed.
#
# Usage: slurm/install.sh [--env FILE] [--policy FILE] [--no-venv] [--check]
#   --env FILE     KEY=VALUE lines for services.env (AMQP_URL and NAS_ROOT at least);
#                  without it an existing services.env is kept
#   --policy FILE  install this policy, replacing the installed one (the lab's repo copy);
#                  without it slurm/policy.conf is installed only where none exists
#   --no-venv      files only (a node whose package is installed otherwise)
#   --check        install nothing; check what is installed (exit 1 on any problem)
# Environment: SLURM_ETC (default /etc/slurm), SLURMK8S_ETC (/etc/slurm-k8s),
#   SLURMK8S_PREFIX (/opt/slurm-k8s), PYTHON (/usr/bin/python3, else python3; >= 3.11 with
#   venv, and runnable by every user: the runner runs as the job's user).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
: "${SLURM_ETC:=/etc/slurm}" "${SLURMK8S_ETC:=/etc/slurm-k8s}" "${SLURMK8S_PREFIX:=/opt/slurm-k8s}"
# The system's python3 first: the venv's interpreter runs every job's batch step as the job's
# user, and one found first on root's PATH may live under a private home (a pyenv in /root).
: "${PYTHON:=$(command -v /usr/bin/python3 || command -v python3 || echo python3)}"
umask 022

envfile= policy= with_venv=1 check_only=
while [ $# -gt 0 ]; do
  case "$1" in
    --env) envfile=${2:?--env needs a file}; shift 2 ;;
    --policy) policy=${2:?--policy needs a file}; shift 2 ;;
    --no-venv) with_venv=; shift ;;
    --check) check_only=1; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done

say() { printf '[install %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it installs into $SLURM_ETC and $SLURMK8S_PREFIX)"

venv=$SLURMK8S_PREFIX/venv
stamp=$SLURMK8S_PREFIX/.installed-hash
# Source file -> installed path and mode. policy.conf is handled on its own (a site edits it).
files=(
  "slurm/slurm-k8s.conf $SLURM_ETC/slurm-k8s.conf 644"
  "slurm/job_submit.lua $SLURM_ETC/job_submit.lua 644"
  "slurm/hook $SLURM_ETC/slurm-k8s/prolog 755"
  "slurm/hook $SLURM_ETC/slurm-k8s/epilog 755"
)

# Content hash of what ends up in the package: a few hundred small files, ~10 ms.
package_hash() {
  (cd "$src" && find pyproject.toml shared services -type f \
     ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z \
   | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

changed=
put() {  # put SRC DEST MODE
  [ -f "$1" ] || die "$1 is missing from the checkout"
  if cmp -s "$1" "$2" && [ "$(stat -c '%a %U' "$2")" = "$3 root" ]; then return 0; fi
  install -D -m "$3" -o root -g root "$1" "$2"
  say "installed $2"
  changed=1
}

install_files() {
  # A Lua syntax error would break every submission: keep the installed, working version.
  # Debian's job_submit_lua.so links Lua 5.1, so check with 5.1's compiler where it exists.
  if command -v luac5.1 >/dev/null && ! luac5.1 -p "$src/slurm/job_submit.lua"; then
    die "slurm/job_submit.lua does not parse as Lua 5.1 (luac5.1 -p); nothing installed"
  fi
  local f s d m
  for f in "${files[@]}"; do
    read -r s d m <<<"$f"
    put "$src/$s" "$d" "$m"
  done
  if [ -n "$policy" ]; then
    put "$policy" "$SLURMK8S_ETC/policy.conf" 644
  elif [ ! -f "$SLURMK8S_ETC/policy.conf" ]; then
    put "$src/slurm/policy.conf" "$SLURMK8S_ETC/policy.conf" 644
  elif ! cmp -s "$src/slurm/policy.conf" "$SLURMK8S_ETC/policy.conf"; then
    say "kept the site's $SLURMK8S_ETC/policy.conf (differs from slurm/policy.conf; --policy replaces it)"
  fi
  if [ -n "$envfile" ]; then
    [ -f "$envfile" ] || die "--env $envfile: no such file"
    # Root-only: it holds the broker password.
    if ! cmp -s "$envfile" "$SLURMK8S_ETC/services.env" \
       || [ "$(stat -c '%a %U' "$SLURMK8S_ETC/services.env")" != "600 root" ]; then
      install -D -m 600 -o root -g root "$envfile" "$SLURMK8S_ETC/services.env"
      say "installed $SLURMK8S_ETC/services.env"
    fi
  fi
}

# Whether an unprivileged user (nobody, no groups) can run the interpreter. Through sh, as the
# batch script does: setpriv's own exec of a python under /root (0700) succeeded here anyway.
runnable_by_users() {
  setpriv --reuid=65534 --regid=65534 --clear-groups -- /bin/sh -c 'exec "$0" -c ""' "$1" \
    2>/dev/null
}

install_venv() {
  local hash
  hash=$(package_hash)
  if [ -x "$venv/bin/python" ] && ! runnable_by_users "$venv/bin/python"; then
    say "$venv's python cannot be run by the jobs' users: making the venv again with $PYTHON"
    rm -rf "$venv"
  fi
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then return 0; fi
  say "installing the slurm-k8s package into $venv"
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv" || die "$PYTHON -m venv failed (python3-venv?)"
  runnable_by_users "$venv/bin/python" ||
    die "$PYTHON cannot be run by the jobs' users (under a private home?): set PYTHON=/usr/bin/python3"
  # Non-editable: the hooks run as root and must not depend on the checkout (it may live
  # where the job's users cannot read). Built from a copy: the checkout gets no build litter.
  local tmp pip=("$venv/bin/pip" -q --disable-pip-version-check)
  tmp=$(mktemp -d)
  (cd "$src" && tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml shared services) \
    | tar -C "$tmp" -x
  "${pip[@]}" wheel --no-deps -w "$tmp/dist" "$tmp" >/dev/null
  # Same version number, new content: force our wheel in, then let pip add missing deps.
  "${pip[@]}" install --force-reinstall --no-deps "$tmp"/dist/*.whl
  "${pip[@]}" install "$tmp"/dist/*.whl
  rm -rf "$tmp"
  chmod -R a+rX "$SLURMK8S_PREFIX"
  echo "$hash" >"$stamp"
  say "package installed ($("$venv/bin/pip" show slurm-k8s 2>/dev/null | sed -n 's/^Version: //p'))"
}

# The lines slurm.conf needs; the example beside this script explains scheduling choices.
print_slurm_conf() {
  local conf=$SLURM_ETC/slurm.conf
  if [ -f "$conf" ] && grep -Eq "^[[:space:]]*Include[[:space:]]+$SLURM_ETC/slurm-k8s.conf" "$conf"; then
    return 0
  fi
  cat >&2 <<TXT

Add this line at the END of $conf on every node (same file everywhere), then
\`scontrol reconfigure\` (or restart slurmctld and slurmd):

    Include $SLURM_ETC/slurm-k8s.conf

It sets JobSubmitPlugins=lua, Prolog=, Epilog=, RequeueExit= and accounting of comments.
Scheduling (backfill, multifactor priority weights) is the site's choice: a commented example
is $src/slurm/slurm.conf.example.
TXT
}

problems=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; problems=$((problems + 1)); }
check() {
  echo "slurm-k8s install check ($(hostname -s)):"
  local f s d m
  for f in "${files[@]}"; do
    read -r s d m <<<"$f"
    if [ ! -f "$d" ]; then bad "$d is missing"
    elif ! cmp -s "$src/$s" "$d"; then bad "$d differs from $s (run install.sh)"
    elif [ "$(stat -c '%a %U' "$d")" != "$m root" ]; then bad "$d: mode/owner $(stat -c '%a %U' "$d"), want $m root"
    else ok "$d"; fi
  done
  if [ -f "$SLURMK8S_ETC/policy.conf" ]; then ok "$SLURMK8S_ETC/policy.conf"
  else bad "$SLURMK8S_ETC/policy.conf is missing"; fi
  local envf=$SLURMK8S_ETC/services.env key
  if [ ! -f "$envf" ]; then
    bad "$envf is missing (--env FILE with AMQP_URL= and NAS_ROOT=)"
  elif [ "$(stat -c '%a %U' "$envf")" != "600 root" ]; then
    bad "$envf must be 600 root: it holds the broker password"
  else
    for key in AMQP_URL NAS_ROOT; do
      if grep -q "^$key=." "$envf"; then ok "$envf sets $key"; else bad "$envf does not set $key"; fi
    done
  fi
  if [ -n "$with_venv" ]; then
    if [ ! -x "$venv/bin/python" ]; then
      bad "$venv is missing"
    elif ! "$venv/bin/python" -I -c 'import services.hooks.__main__, services.runner.__main__' 2>/dev/null; then
      bad "$venv cannot import services.hooks and services.runner"
    elif ! runnable_by_users "$venv/bin/python"; then
      bad "$venv's python cannot be run by an unprivileged user (the runner runs as the job's)"
    elif [ "$(cat "$stamp" 2>/dev/null)" != "$(package_hash)" ]; then
      bad "$venv holds another version of the package than this checkout (run install.sh)"
    else
      ok "$venv (runner and hooks import)"
    fi
  fi
  if command -v luac5.1 >/dev/null; then
    if luac5.1 -p "$SLURM_ETC/job_submit.lua" 2>/dev/null; then ok "job_submit.lua parses (Lua 5.1)"
    else bad "$SLURM_ETC/job_submit.lua does not parse as Lua 5.1"; fi
  fi
  if [ -f "$SLURM_ETC/slurm.conf" ]; then
    if grep -Eq "^[[:space:]]*Include[[:space:]]+$SLURM_ETC/slurm-k8s.conf" "$SLURM_ETC/slurm.conf"; then
      ok "slurm.conf includes $SLURM_ETC/slurm-k8s.conf"
    else
      bad "slurm.conf does not include $SLURM_ETC/slurm-k8s.conf"
    fi
  fi
  # What the running slurmctld uses (it reads the files at start and on reconfigure), when
  # it reads this slurm.conf.
  local live
  if [ -f "$SLURM_ETC/slurm.conf" ] && live=$(timeout 10 scontrol show config 2>/dev/null) \
     && grep -Eq "^SLURM_CONF += $SLURM_ETC/slurm.conf\$" <<<"$live"; then
    if grep -Eq "^Prolog +=.*$SLURM_ETC/slurm-k8s/prolog" <<<"$live" \
       && grep -Eq "^Epilog +=.*$SLURM_ETC/slurm-k8s/epilog" <<<"$live" \
       && grep -Eq "^JobSubmitPlugins += lua" <<<"$live"; then
      ok "slurmctld runs with the prolog, epilog and job_submit/lua"
    else
      bad "slurmctld does not use the prolog, epilog and job_submit/lua yet (scontrol reconfigure)"
    fi
  fi
  # Not a problem: without the relay the hooks publish themselves, only slower.
  if [ -n "$with_venv" ]; then
    if relay_running; then ok "the hook relay watches the outbox"
    else printf '  note  %s\n' "no hook relay watches the outbox: each hook starts Python (~0.2 s)"; fi
  fi
  [ "$problems" -eq 0 ] && echo "all ok" || echo "$problems problem(s)"
  [ "$problems" -eq 0 ]
}

# The node's hook relay (services/hooks/relay.py) runs the installed package. Under systemd it
# is installed and kept running here; elsewhere the site's supervisor runs it (the lab:
# lab/slurm/relay.sh). Without it the hooks still work, each starting Python (~0.2 s).
relay_unit=/etc/systemd/system/slurm-k8s-hook-relay.service
relay_running() { ! flock -n /var/spool/slurm-k8s/outbox/.relay.lock true 2>/dev/null; }
install_relay() {
  if [ ! -d /run/systemd/system ]; then
    relay_running || say "no systemd here: run '$venv/bin/python -I -m services.hooks relay' under the node's supervisor"
    return 0
  fi
  local unit_changed=
  if ! cmp -s "$src/deploy/systemd/slurm-k8s-hook-relay.service" "$relay_unit"; then
    install -m 644 -o root -g root "$src/deploy/systemd/slurm-k8s-hook-relay.service" "$relay_unit"
    systemctl daemon-reload
    say "installed $relay_unit"
    unit_changed=1
  fi
  systemctl enable --quiet slurm-k8s-hook-relay
  if [ -n "$unit_changed$package_changed" ]; then systemctl restart slurm-k8s-hook-relay
  else systemctl start slurm-k8s-hook-relay; fi
}

package_changed=
if [ -z "$check_only" ]; then
  install_files
  [ -z "$with_venv" ] || { install_venv; install_relay; }
  if [ -n "$changed" ] && [ -f "$SLURM_ETC/slurm.conf" ] \
     && timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    say "scontrol reconfigure (slurmctld reads job_submit.lua and slurm-k8s.conf anew)"
    timeout 30 scontrol reconfigure
  fi
  print_slurm_conf
fi
check
