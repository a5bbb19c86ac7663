# shellcheck shell=bash disable=SC2034
# Paths and helpers shared by lab/k8s/{up,down,status,env}.sh; sourced after ../lib.sh.
K8S_BIN="$LAB_CACHE/k8s/$K8S_VERSION/bin"
K8S_DIR="$LAB_STATE/k8s"
PKI="$K8S_DIR/pki"
RUN_DIR="$LAB_STATE/run"
ETCD_DATA="$LAB_STATE/etcd"
CTRD_DIR="$LAB_STATE/containerd"          # config, hosts.toml tree, image store (kept by down)
CTRD_RUN=/run/slurm-k8s-lab/containerd     # sockets and shim state (tmpfs, per boot)
CTRD_SOCK="$CTRD_RUN/containerd.sock"
CNI_CONF_DIR="$LAB_STATE/cni/net.d"
CNI_BIN_DIR=/usr/lib/cni
REG_DIR="$LAB_STATE/registry"
# The registry itself listens on a unix socket that only root and the front's workers can
# open; the front (nginx) on $REGISTRY lets anyone pull and asks for credentials to push.
REG_RUN=/run/slurm-k8s-lab/registry        # 2750 root:$REG_FRONT_GROUP, the socket inherits it
REG_SOCK="$REG_RUN/registry.sock"
REG_FRONT_USER=www-data
REG_FRONT_GROUP=www-data
REG_PORT=${REGISTRY##*:}
REG_CREDENTIALS="$REG_DIR/credentials"    # user=, password= (root only)
REG_AUTHFILE="$REG_DIR/auth.json"         # the same, for skopeo --dest-authfile (root only)
REG_HTPASSWD="$REG_DIR/htpasswd"          # hash only, readable by the front's workers
KUBELET_ROOT=/var/lib/kubelet              # device plugins only look under this path
ADMIN_KUBECONFIG="$K8S_DIR/admin.kubeconfig"
PAUSE_IMAGE="$REGISTRY/pause:3.10"
# The node's InternalIP. The kubelet rejects loopback node IPs and then publishes no address at
# all, so the apiserver could not reach it (logs, exec). A /32 on lo is local-only, like 127/8.
LAB_NODE_IP=${LAB_NODE_IP:-10.255.255.1}
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
APISERVER=https://127.0.0.1:6443
K8S_COMPONENTS="etcd kube-apiserver kube-controller-manager kube-scheduler kubelet containerd registry registry-front"

pidfile() { echo "$RUN_DIR/$1.pid"; }

# Alive = the pid in our pid file is running the expected program (pids get reused).
alive() { # NAME EXE-BASENAME
  local pf pid
  pf=$(pidfile "$1")
  [ -s "$pf" ] || return 1
  pid=$(cat "$pf")
  [ -d "/proc/$pid" ] || return 1
  [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = "$2" ]
}

# Starts a daemon detached from this shell (own session, no controlling terminal), logging to
# $LAB_LOG/NAME.log, its pid in $RUN_DIR/NAME.pid.
start_daemon() { # NAME CMD ARGS...
  local name=$1; shift
  mkdir -p "$RUN_DIR" "$LAB_LOG"
  printf '\n===== %(%F %T)T starting %s\n' -1 "$*" >> "$LAB_LOG/$name.log"
  # 9>&-: the daemon must not inherit (and so hold forever) the up/down lock.
  setsid nohup "$@" >> "$LAB_LOG/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$(pidfile "$name")"
}

# Our daemons that lost their pid file (e.g. two up.sh racing): the program is ours when its
# binary lives in $LAB_CACHE or its command line names our state directory.
orphans() { # EXE-PATH
  local d pid exe
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    exe=$(readlink "$d/exe" 2>/dev/null) || continue
    [ "$exe" = "$1" ] || continue
    case $exe in "$LAB_CACHE"/*) echo "$pid"; continue ;; esac
    tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -qF "$LAB_STATE" && echo "$pid"
  done
  return 0
}

kill_orphans() { # EXE-PATH
  local pid
  for pid in $(orphans "$1"); do
    log "k8s: stopping stray $(basename "$1") (pid $pid)"
    kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do [ -z "$(orphans "$1")" ] && return 0; sleep 0.2; done
  for pid in $(orphans "$1"); do kill -9 "$pid" 2>/dev/null || true; done
}

# One up.sh/down.sh at a time: a second caller waits instead of racing the first.
lab_k8s_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/k8s.lock"
  if ! flock -n 9; then
    log "k8s: another lab/k8s up/down is running; waiting for it"
    flock 9
  fi
}

stop_daemon() { # NAME EXE-BASENAME
  local pf pid i
  pf=$(pidfile "$1")
  if alive "$1" "$2"; then
    pid=$(cat "$pf")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
    log "k8s: stopped $1 (pid $pid)"
  fi
  rm -f "$pf"
}

wait_for() { # SECONDS DESCRIPTION CMD...
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# Health probes (each prints nothing, answers by exit status).
etcd_curl() { # PATH: etcd's client port answers only clients with a certificate of the lab CA
  curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/etcd-healthcheck-client.crt" \
    --key "$PKI/etcd-healthcheck-client.key" "https://127.0.0.1:2379$1"
}
etcd_healthy() { etcd_curl /health | grep -q '"health":"true"'; }
admin_curl() { curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }
apiserver_healthy() { [ "$(admin_curl "$APISERVER/readyz" 2>/dev/null)" = ok ]; }
kcm_healthy() { [ "$(curl -skf --max-time 3 https://127.0.0.1:10257/healthz)" = ok ]; }
scheduler_healthy() { [ "$(curl -skf --max-time 3 https://127.0.0.1:10259/healthz)" = ok ]; }
kubelet_healthy() { [ "$(curl -sf --max-time 3 http://127.0.0.1:10248/healthz)" = ok ]; }
containerd_healthy() { ctr --address "$CTRD_SOCK" version >/dev/null 2>&1; }
registry_healthy() { curl -sf --max-time 3 -o /dev/null --unix-socket "$REG_SOCK" http://registry/v2/; }
# An anonymous read through the front reaches the registry, and the port is held by our nginx
# (a user who bound 127.0.0.1:$REG_PORT while the front was down would otherwise pass).
registry_front_healthy() {
  [ "$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REG_PORT/v2/_catalog?n=1")" = 200 ] &&
    ss -Hltnp "sport = :$REG_PORT" | grep -q "pid=$(cat "$(pidfile registry-front)" 2>/dev/null),"
}

kubectl_admin() { "$K8S_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
