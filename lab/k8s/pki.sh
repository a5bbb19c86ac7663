# shellcheck shell=bash
# Sourced by up.sh: the lab's PKI and kubeconfigs under $PKI / $K8S_DIR. Keys and certificates
# are made once and reused; kubeconfigs are rewritten each run (they only hold file paths).
mkdir -p "$PKI"
chmod 700 "$PKI"

ca_ensure() {
  [ -s "$PKI/ca.crt" ] && [ -s "$PKI/ca.key" ] && return 0
  log "k8s: creating the lab CA"
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days 3650 \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=slurm-k8s-lab-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

# cert NAME SUBJECT EKU [SANS]: EKU is clientAuth, serverAuth or both.
cert() {
  local name=$1 subj=$2 eku=$3 sans=${4:-} ext
  # A changed SAN list (e.g. another node IP) re-issues the certificate.
  if [ -s "$PKI/$name.crt" ] && [ -s "$PKI/$name.key" ] && [ "$(cat "$PKI/$name.sans" 2>/dev/null)" = "$sans" ]; then
    return 0
  fi
  ext=$(mktemp)
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } > "$ext"
  openssl req -new -nodes -newkey rsa:2048 -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -sha256 -days 3650 -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -out "$PKI/$name.crt" -extfile "$ext" 2>/dev/null
  rm -f "$ext" "$PKI/$name.csr"
  printf '%s' "$sans" > "$PKI/$name.sans"
  chmod 600 "$PKI/$name.key"
  log "k8s: issued $name ($subj)"
}

kubeconfig() { # FILE USER CERT-NAME
  cat > "$1" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: $APISERVER
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$3.crt
    client-key: $PKI/$3.key
contexts:
- name: $2@lab
  context: {cluster: lab, user: $2}
current-context: $2@lab
YAML
  chmod 600 "$1"
}

ca_ensure
cert apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:$LAB_NODE,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=lab-admin" clientAuth
cert kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
cert kube-scheduler "/CN=system:kube-scheduler" clientAuth
# Node name is part of the identity (NodeRestriction), so these are per node name.
cert "kubelet-client-$LAB_NODE" "/O=system:nodes/CN=system:node:$LAB_NODE" clientAuth
cert "kubelet-serving-$LAB_NODE" "/CN=$LAB_NODE" serverAuth "IP:$LAB_NODE_IP,IP:127.0.0.1,DNS:$LAB_NODE,DNS:localhost"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
# etcd speaks TLS only and asks every client (and its one peer, itself) for a certificate of
# this CA: on a shared machine its loopback port is reachable by every user, and whoever can
# write etcd owns the cluster (a privileged Pod, a RoleBinding to cluster-admin).
cert etcd-server "/CN=etcd" "serverAuth,clientAuth" "IP:127.0.0.1,DNS:localhost"
cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
cert etcd-healthcheck-client "/CN=etcd-healthcheck-client" clientAuth
if [ ! -s "$PKI/sa.key" ]; then
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI/sa.key"
  log "k8s: created the service-account signing key"
fi

kubeconfig "$ADMIN_KUBECONFIG" lab-admin admin
kubeconfig "$K8S_DIR/controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager
kubeconfig "$K8S_DIR/scheduler.kubeconfig" system:kube-scheduler kube-scheduler
kubeconfig "$K8S_DIR/kubelet.kubeconfig" "system:node:$LAB_NODE" "kubelet-client-$LAB_NODE"
