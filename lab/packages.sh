#!/usr/bin/env bash
# Installs the Debian packages the lab needs. Fast no-op when all are present, so `make lab`
# can always call it.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

PACKAGES=(
  rabbitmq-server
  slurmctld slurmd slurmdbd slurm-client munge mariadb-server
  containerd runc containernetworking-plugins docker-registry skopeo busybox-static debootstrap
  bash-static  # the static bash every job Pod gets from the NAS (lab/nas/up.sh; #!/bin/bash on alpine)
  jq iptables conntrack socat lua5.3 openssl ca-certificates util-linux procps iproute2 psmisc
  acl gettext-base curl python3 python3-venv python3-pip
  lua5.1  # the Lua slurmctld links (job_submit_lua.so): install-hooks checks syntax with it
  gcc libc6-dev binutils  # the pause image is a static build of Kubernetes' pause.c
  nginx  # the registry's front: anonymous pull, authenticated push (lab/k8s/up.sh)
  inotify-tools  # make bench: the seed's naive inotifywait loop is one of its baselines
)

# Kubernetes v1.37 needs Go >= 1.26 (its go.mod); Debian's golang is older, so the machine's
# own toolchain is used. Fail early with the reason rather than deep inside the build.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
  export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null || die "Go >= 1.26 is required on PATH to build Kubernetes"

# One dpkg-query for all: packages dpkg never heard of print nothing, so compare names.
installed=" $(dpkg-query -W -f='${Package}=${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null \
  | sed -n 's/=ii *$//p' | tr '\n' ' ' || true) "
missing=()
for p in "${PACKAGES[@]}"; do
  case "$installed" in *" $p "*) ;; *) missing+=("$p") ;; esac
done

if [ ${#missing[@]} -gt 0 ]; then
  log "packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh package list is only worth its ~10 s when we actually install something.
  lists=/var/lib/apt/lists
  if [ -z "$(find "$lists" -maxdepth 1 -name '*_InRelease' -mmin -360 2>/dev/null | head -1)" ]; then
    apt-get update -q
  fi
  # Daemons are started by the lab scripts with the lab's config; stop postinst scripts
  # from starting them with package defaults (what Docker's policy-rc.d does).
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || die "packages: apt-get install failed ($rc)"
else
  log "packages: all ${#PACKAGES[@]} installed"
fi

# ensurepip is split out of python3 on Debian; a venv without it is useless.
if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
  die "packages: /usr/bin/python3 cannot create venvs (python3-venv broken?)"
fi
