#!/usr/bin/env bash
# Brings up the lab's single-node Kubernetes: a local registry with locally built images,
# containerd (CRI, CNI bridge), etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and a fake GPU device plugin, then the cluster objects in manifests/. Idempotent:
# what is healthy (and started with the same settings) is left running; only what is down or
# reconfigured is (re)started. Runs as root without systemd.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=common.sh
. "$here/common.sh"
[ "$(id -u)" = 0 ] || die "k8s: run as root"
lab_k8s_lock
t0=$(date +%s)

# ensure_daemon NAME EXE HEALTH-FN TIMEOUT [FILE...] -- CMD...
# The fingerprint (command line + the config files listed) tells "same settings" from "changed".
ensure_daemon() {
  local name=$1 exe=$2 health=$3 timeout=$4; shift 4
  local files=()
  while [ "$1" != -- ]; do files+=("$1"); shift; done
  shift
  local fp fpfile="$RUN_DIR/$name.fingerprint"
  # The executable's size and mtime make a rebuilt binary count as a change too.
  fp=$( { printf '%s\n' "$@"; stat -L -c '%s %Y' "$1"; cat "${files[@]}" 2>/dev/null; } |
    sha256sum | cut -d' ' -f1)
  if alive "$name" "$exe"; then
    if [ "$(cat "$fpfile" 2>/dev/null)" != "$fp" ]; then
      log "k8s: $name settings changed: restarting"
      stop_daemon "$name" "$exe"
    elif wait_for "$timeout" "$name" "$health"; then
      log "k8s: $name already up (pid $(cat "$(pidfile "$name")"))"
      return 0
    else
      log "k8s: $name running but unhealthy for ${timeout}s: restarting"
      stop_daemon "$name" "$exe"
    fi
  fi
  kill_orphans "$(readlink -f "$1")"
  log "k8s: starting $name"
  start_daemon "$name" "$@"
  echo "$fp" > "$fpfile"
  # Not alive yet may also mean "not exec'd yet": right after the fork the pid still runs
  # setsid/nohup (seen on a loaded machine: the check came first and up.sh gave up at once).
  # Keep waiting while that pid exists and is not a zombie.
  exec_pending() {
    local pid stat
    pid=$(cat "$(pidfile "$name")" 2>/dev/null) || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ] && [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" != "$exe" ]
  }
  # Pending first: asked the other way round, the exec could complete between the two
  # checks (not alive yet, then not pending) and a healthy start counted as dead (seen once).
  up_or_dead() {
    if exec_pending; then return 1; fi
    if alive "$name" "$exe"; then "$health"; fi
  }
  if ! wait_for "$timeout" "$name" up_or_dead || ! "$health"; then
    tail -n 30 "$LAB_LOG/$name.log" >&2 || true
    die "k8s: $name did not become healthy within ${timeout}s (log: $LAB_LOG/$name.log)"
  fi
  log "k8s: $name up (pid $(cat "$(pidfile "$name")"))"
}

# --- binaries ------------------------------------------------------------------------------
bash "$here/build.sh"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl fake-gpu-plugin; do
  [ -x "$K8S_BIN/$b" ] || die "k8s: $K8S_BIN/$b missing after build"
done
for p in containerd containerd-shim-runc-v2 runc ctr docker-registry nginx skopeo debootstrap curl openssl iptables; do
  command -v "$p" >/dev/null || die "k8s: $p not installed (lab/packages.sh installs it)"
done

mkdir -p "$K8S_DIR" "$RUN_DIR" "$LAB_LOG" "$ETCD_DATA" "$CTRD_DIR" "$CTRD_RUN" "$CNI_CONF_DIR" "$REG_DIR/data"
chmod 700 "$ETCD_DATA"
lab_make_gpu_devices
# The registry's name must resolve on this machine only (containerd and skopeo both use it).
if ! grep -qE '^127\.0\.0\.1[[:space:]].*\bnas-hub\.local\b' /etc/hosts; then
  echo "127.0.0.1 nas-hub.local" >> /etc/hosts
  log "k8s: added nas-hub.local to /etc/hosts"
fi
# Pods have no route out of this machine anyway (no masquerading); the kernel still needs
# forwarding on for pod <-> host traffic across the bridge.
sysctl -qw net.ipv4.ip_forward=1
if ! ip -4 addr show dev lo | grep -q "inet $LAB_NODE_IP/"; then
  ip addr add "$LAB_NODE_IP/32" dev lo
  log "k8s: node IP $LAB_NODE_IP added to lo"
fi

# --- PKI and kubeconfigs -------------------------------------------------------------------
# shellcheck source=pki.sh
. "$here/pki.sh"

# --- registry ------------------------------------------------------------------------------
# Anyone on the machine may pull; pushing needs the lab's credentials. The registry itself
# (no auth of its own) listens on a unix socket in a directory only root and the front's
# group can enter, so the only way to it is the front: nginx on 127.0.0.1:$REG_PORT passes
# GET/HEAD anonymously and asks for basic auth for every other method and for the /v2/ ping
# (skopeo and docker send credentials only to a registry whose ping asks for them). A loopback
# port for the registry would not do: every local user can connect to 127.0.0.1.
# Deletes stay disabled (distribution's default): nothing in the lab deletes images.
mkdir -p "$REG_RUN"
chown "root:$REG_FRONT_GROUP" "$REG_RUN"
chmod 2750 "$REG_RUN"   # setgid: the socket gets the front's group
chmod 700 "$REG_DIR/data"
# Credentials are made once and kept (like lab/rabbitmq), so restarts keep working pushes.
if [ ! -s "$REG_CREDENTIALS" ]; then
  ( umask 077
    printf 'user=%s\npassword=%s\n' labpush "$(openssl rand -hex 16)" > "$REG_CREDENTIALS" )
  log "k8s: generated registry push credentials in $REG_CREDENTIALS"
fi
chmod 600 "$REG_CREDENTIALS"
reg_user=$(sed -n 's/^user=//p' "$REG_CREDENTIALS")
reg_pw=$(sed -n 's/^password=//p' "$REG_CREDENTIALS")
# Hashed with a random salt: rewritten only when the credentials change (the front's
# fingerprint includes it, so rewriting it would restart the front).
if [ ! -s "$REG_HTPASSWD" ] || [ "$REG_CREDENTIALS" -nt "$REG_HTPASSWD" ]; then
  ( umask 077
    printf '%s:%s\n' "$reg_user" "$(printf '%s' "$reg_pw" | openssl passwd -6 -stdin)" > "$REG_HTPASSWD.tmp" )
  chown "root:$REG_FRONT_GROUP" "$REG_HTPASSWD.tmp"
  chmod 640 "$REG_HTPASSWD.tmp"
  mv "$REG_HTPASSWD.tmp" "$REG_HTPASSWD"
fi
( umask 077
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$REGISTRY" \
    "$(printf '%s:%s' "$reg_user" "$reg_pw" | base64 -w0)" > "$REG_AUTHFILE" )
chmod 600 "$REG_AUTHFILE"
unset reg_user reg_pw
cat > "$REG_DIR/config.yml" <<YAML
version: 0.1
log: {level: info, fields: {service: registry}}
storage:
  filesystem: {rootdirectory: $REG_DIR/data}
http:
  net: unix
  addr: $REG_SOCK
YAML
# umask 007: the socket (and the data the registry writes) is not for other users.
umask_was=$(umask)
umask 007
ensure_daemon registry docker-registry registry_healthy 30 "$REG_DIR/config.yml" -- \
  /usr/bin/docker-registry serve "$REG_DIR/config.yml"
umask "$umask_was"

mkdir -p "$REG_DIR/nginx-tmp"
cat > "$REG_DIR/nginx.conf" <<NGINX
# The lab registry's front; generated by lab/k8s/up.sh.
user $REG_FRONT_USER $REG_FRONT_GROUP;
worker_processes 1;
pid $REG_RUN/nginx.pid;
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log /dev/stdout;
  server_tokens off;
  client_body_temp_path $REG_DIR/nginx-tmp/body;
  proxy_temp_path $REG_DIR/nginx-tmp/proxy;
  fastcgi_temp_path $REG_DIR/nginx-tmp/fastcgi;
  uwsgi_temp_path $REG_DIR/nginx-tmp/uwsgi;
  scgi_temp_path $REG_DIR/nginx-tmp/scgi;
  upstream registry { server unix:$REG_SOCK; }
  server {
    listen 127.0.0.1:$REG_PORT;
    client_max_body_size 0;            # layers are streamed to the registry, any size
    chunked_transfer_encoding on;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_read_timeout 900;
    proxy_set_header Host \$http_host;  # the registry builds upload Location URLs from it
    proxy_set_header X-Forwarded-Proto \$scheme;
    # The API's ping: a client learns here whether to send credentials (pullers never ask).
    location = /v2/ {
      auth_basic "lab registry";
      auth_basic_user_file $REG_HTPASSWD;
      add_header Docker-Distribution-Api-Version registry/2.0 always;
      proxy_pass http://registry;
    }
    location /v2/ {
      # GET (and with it HEAD) is reading; every other method writes or deletes.
      limit_except GET {
        auth_basic "lab registry: pushing needs credentials";
        auth_basic_user_file $REG_HTPASSWD;
      }
      add_header Docker-Distribution-Api-Version registry/2.0 always;
      proxy_pass http://registry;
    }
    location / { return 404; }
  }
}
NGINX
# A front whose master was SIGKILLed leaves its workers holding the port, and a local user
# may have bound it meanwhile: nothing but our front may listen there.
port_holders() { ss -Hltnp "sport = :$REG_PORT" | grep -oE 'pid=[0-9]+' | cut -d= -f2 | sort -u; }
port_free() { [ -z "$(port_holders)" ]; }
if ! alive registry-front nginx && [ -n "$(port_holders)" ]; then
  for pid in $(port_holders); do
    log "k8s: stopping $(readlink "/proc/$pid/exe" 2>/dev/null) (pid $pid), it holds port $REG_PORT"
    kill "$pid" 2>/dev/null || true
  done
  wait_for 10 "port $REG_PORT" port_free || { port_holders | xargs -r kill -9 || true; }
fi
ensure_daemon registry-front nginx registry_front_healthy 30 "$REG_DIR/nginx.conf" "$REG_HTPASSWD" -- \
  /usr/sbin/nginx -c "$REG_DIR/nginx.conf" -e stderr -g 'daemon off;'

# --- images --------------------------------------------------------------------------------
REGISTRY_AUTHFILE="$REG_AUTHFILE" bash "$here/../images/build.sh"

# --- containerd ----------------------------------------------------------------------------
mkdir -p "$CTRD_DIR/certs.d/$REGISTRY"
cat > "$CTRD_DIR/certs.d/$REGISTRY/hosts.toml" <<TOML
# The lab's site registry speaks plain http on this machine.
server = "http://$REGISTRY"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
TOML
cat > "$CNI_CONF_DIR/10-lab.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni-lab0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$LAB_STATE/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
cat > "$CTRD_DIR/config.toml" <<TOML
# containerd for the lab kubelet; independent of /etc/containerd and any system containerd.
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_RUN/state"

[grpc]
  address = "$CTRD_SOCK"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # WHY: processes here lack CAP_SYS_RESOURCE; runc cannot lower oom_score_adj (sandboxes ask
  # for -998) and every sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CTRD_DIR/certs.d"
TOML
ensure_daemon containerd containerd containerd_healthy 30 \
  "$CTRD_DIR/config.toml" "$CNI_CONF_DIR/10-lab.conflist" "$CTRD_DIR/certs.d/$REGISTRY/hosts.toml" -- \
  /usr/bin/containerd --config "$CTRD_DIR/config.toml"

# --- etcd ----------------------------------------------------------------------------------
ensure_daemon etcd etcd etcd_healthy 60 -- \
  "$K8S_BIN/etcd" --name lab --data-dir "$ETCD_DATA" \
  --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
  --cert-file="$PKI/etcd-server.crt" --key-file="$PKI/etcd-server.key" \
  --client-cert-auth --trusted-ca-file="$PKI/ca.crt" \
  --listen-peer-urls https://127.0.0.1:2380 --initial-advertise-peer-urls https://127.0.0.1:2380 \
  --peer-cert-file="$PKI/etcd-server.crt" --peer-key-file="$PKI/etcd-server.key" \
  --peer-client-cert-auth --peer-trusted-ca-file="$PKI/ca.crt" \
  --initial-cluster lab=https://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
  --quota-backend-bytes 2147483648 --log-level warn

# --- control plane -------------------------------------------------------------------------
FEATURE_GATES="PodLogsQuerySplitStreams=true"   # alpha in 1.37: split stdout/stderr pod logs
# WHY --endpoint-reconciler-type=none: the reconciler refuses a loopback advertise address, and
# the lab keeps the API on 127.0.0.1; nothing here routes the kubernetes Service (no kube-proxy).
ensure_daemon kube-apiserver kube-apiserver apiserver_healthy 120 "$PKI/apiserver.crt" -- \
  "$K8S_BIN/kube-apiserver" \
  --bind-address=127.0.0.1 --secure-port=6443 --advertise-address=127.0.0.1 \
  --endpoint-reconciler-type=none \
  --etcd-servers=https://127.0.0.1:2379 --etcd-cafile="$PKI/ca.crt" \
  --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --authorization-mode=Node,RBAC --anonymous-auth=true \
  --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --feature-gates="$FEATURE_GATES" \
  --profiling=false --v=1

ensure_daemon kube-controller-manager kube-controller-manager kcm_healthy 60 -- \
  "$K8S_BIN/kube-controller-manager" \
  --bind-address=127.0.0.1 \
  --kubeconfig="$K8S_DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$K8S_DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$K8S_DIR/controller-manager.kubeconfig" \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --leader-elect=false --profiling=false --v=1

ensure_daemon kube-scheduler kube-scheduler scheduler_healthy 60 -- \
  "$K8S_BIN/kube-scheduler" \
  --bind-address=127.0.0.1 \
  --kubeconfig="$K8S_DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig="$K8S_DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig="$K8S_DIR/scheduler.kubeconfig" \
  --leader-elect=false --profiling=false --v=1

# --- kubelet -------------------------------------------------------------------------------
cat > "$K8S_DIR/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $LAB_NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving-$LAB_NODE.crt
tlsPrivateKeyFile: $PKI/kubelet-serving-$LAB_NODE.key
containerRuntimeEndpoint: unix://$CTRD_SOCK
imageServiceEndpoint: unix://$CTRD_SOCK
# containerd 1.6 has no RuntimeConfig RPC, so the kubelet uses this value (must match runc's).
cgroupDriver: cgroupfs
# This VM has a cgroup v1 hierarchy; 1.37 still runs there when told not to fail.
failCgroupV1: false
failSwapOn: false
registerNode: true
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
maxPods: 110
serializeImagePulls: false
# WHY: the disk may be 80% full; default thresholds would taint the node DiskPressure.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
  imagefs.inodesFree: "1%"
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
# WHY: without CAP_SYS_RESOURCE the kubelet cannot lower its own oom_score_adj (default -999).
oomScoreAdj: 0
# WHY: a job's stdout is its output, copied from this log by the batch step. A follow read
# that is behind when the kubelet rotates the file can miss what went to the rotated file,
# and the runtime cuts a line in two at each rotation (docs/execution-runner.md, Output).
# The log lives as long as the Pod, which the batch step deletes at the job's end.
containerLogMaxSize: 1Gi
containerLogMaxFiles: 2
featureGates:
  PodLogsQuerySplitStreams: true
YAML
ensure_daemon kubelet kubelet kubelet_healthy 90 "$K8S_DIR/kubelet-config.yaml" \
  "$PKI/kubelet-serving-$LAB_NODE.crt" -- \
  "$K8S_BIN/kubelet" \
  --config="$K8S_DIR/kubelet-config.yaml" \
  --kubeconfig="$K8S_DIR/kubelet.kubeconfig" \
  --hostname-override="$LAB_NODE" --node-ip="$LAB_NODE_IP" \
  --root-dir="$KUBELET_ROOT" --v=1

# --- fake GPUs -----------------------------------------------------------------------------
gpu_plugin_healthy() { [ -S "$KUBELET_ROOT/device-plugins/fake-gpu.sock" ]; }
ensure_daemon fake-gpu-plugin fake-gpu-plugin gpu_plugin_healthy 30 -- \
  "$K8S_BIN/fake-gpu-plugin" --resource nvidia.com/gpu --devices "$LAB_GPU_FILES" \
  --dir "$KUBELET_ROOT/device-plugins"

# --- node and cluster objects --------------------------------------------------------------
# Ready as reported by the running kubelet: a stale Ready from before a restart does not count.
kubelet_since=$(date -u -d "@$(stat -c %Y "$(pidfile kubelet)")" +%Y-%m-%dT%H:%M:%SZ)
node_ready() {
  local s
  s=$(kubectl_admin get node "$LAB_NODE" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastHeartbeatTime}')
  [ "${s%% *}" = True ] && [[ ! "${s#* }" < "$kubelet_since" ]]
}
wait_for 120 "node Ready" node_ready || die "k8s: node $LAB_NODE not Ready (see $LAB_LOG/kubelet.log)"
log "k8s: node $LAB_NODE Ready"

mkdir -p "$NAS_ROOT"
for m in "$here"/manifests/*.yaml; do
  sed -e "s#\${NAS_ROOT}#$NAS_ROOT#g" -e "s#\${LAB_NODE}#$LAB_NODE#g" "$m" | kubectl_admin apply -f - >/dev/null
done
log "k8s: applied $(ls "$here"/manifests/*.yaml | wc -l) manifest(s)"

gpus_allocatable() {
  [ "$(kubectl_admin get node "$LAB_NODE" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" = 4 ]
}
wait_for 60 "gpus" gpus_allocatable || die "k8s: node does not advertise nvidia.com/gpu=4 (see $LAB_LOG/fake-gpu-plugin.log)"
pvc_bound() {
  [ "$(kubectl_admin -n slurm-jobs get pvc nas -o jsonpath='{.status.phase}')" = Bound ]
}
wait_for 60 "pvc" pvc_bound || die "k8s: PVC slurm-jobs/nas not Bound"
log "k8s: up in $(( $(date +%s) - t0 )) s; KUBECONFIG=$ADMIN_KUBECONFIG"
