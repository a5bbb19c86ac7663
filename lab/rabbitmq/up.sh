#!/usr/bin/env bash
# RabbitMQ for the lab: Debian's 3.10 started detached (no systemd), loopback only,
# management UI, vhost `slurm-k8s` for the service user, `labadmin` for the UI, no guest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"
umask 022

changed=
for f in rabbitmq-env.conf rabbitmq.conf enabled_plugins; do
  if ! cmp -s "$here/$f" "/etc/rabbitmq/$f"; then
    install -m 0644 "$here/$f" "/etc/rabbitmq/$f"
    changed=1
  fi
done
if [ -n "$changed" ] && rmq_running; then
  log "rabbitmq: configuration changed, restarting"
  bash "$here/down.sh"
fi

if ! rmq_running; then
  log "rabbitmq: starting"
  mkdir -p /var/log/rabbitmq && chown rabbitmq:rabbitmq /var/log/rabbitmq
  rabbitmq-server -detached
  # await_startup fails at once while the Erlang node is not reachable yet; then it blocks
  # until the rabbit application has booted.
  ok=
  for _ in $(seq 1 60); do
    if rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1; then ok=1; break; fi
    rmq_running || break
    sleep 1
  done
  [ -n "$ok" ] || die "rabbitmq: did not start, see /var/log/rabbitmq/"
  log "rabbitmq: started"
fi

# Credentials are made once and kept, so `make lab-down && make lab` keeps every client's URL.
mkdir -p "$RMQ_STATE" && chmod 700 "$RMQ_STATE"
if [ ! -s "$RMQ_CREDENTIALS" ]; then
  ( umask 077
    printf 'user=%s\npassword=%s\nadmin_user=%s\nadmin_password=%s\n' \
      "$RMQ_USER" "$(openssl rand -hex 16)" "$RMQ_ADMIN" "$(openssl rand -hex 16)" \
      >"$RMQ_CREDENTIALS" )
  log "rabbitmq: generated credentials in $RMQ_CREDENTIALS"
fi
chmod 600 "$RMQ_CREDENTIALS"
pw=$(rmq_cred password) admin_pw=$(rmq_cred admin_password)

api() {  # api METHOD PATH [JSON] -> HTTP status on stdout
  # Credentials and body go in a config on stdin, not on the command line (ps shows that).
  { printf 'user = "%s:%s"\n' "$RMQ_ADMIN" "$admin_pw"
    [ -z "${3:-}" ] || printf 'data = "%s"\n' "${3//\"/\\\"}"
  } | curl -sS -K - -o /dev/null -w '%{http_code}' -X "$1" \
        -H 'content-type: application/json' "http://127.0.0.1:15672/api$2"
}

# The management listener can come up a moment after the broker reports booted.
for _ in $(seq 1 60); do
  code=$(api GET /whoami || true)
  [ "$code" = 000 ] || break
  sleep 0.5
done
if [ "$code" != 200 ]; then
  # Only the admin needs the (slow) CLI; everything else goes through the HTTP API.
  log "rabbitmq: creating $RMQ_ADMIN"
  if rabbitmqctl -q list_users | awk '{print $1}' | grep -qx "$RMQ_ADMIN"; then
    rabbitmqctl -q change_password "$RMQ_ADMIN" "$admin_pw" >/dev/null
  else
    rabbitmqctl -q add_user "$RMQ_ADMIN" "$admin_pw" >/dev/null
  fi
  rabbitmqctl -q set_user_tags "$RMQ_ADMIN" administrator >/dev/null
  [ "$(api GET /whoami)" = 200 ] || die "rabbitmq: $RMQ_ADMIN cannot use the management API"
fi

check() { case "$1" in 2??|404) ;; *) die "rabbitmq: API $2 answered $1" ;; esac; }
check "$(api PUT "/vhosts/$RMQ_VHOST" '{}')" "PUT vhost"
check "$(api PUT "/users/$RMQ_USER" "{\"password\":\"$pw\",\"tags\":\"\"}")" "PUT user"
check "$(api PUT "/permissions/$RMQ_VHOST/$RMQ_USER" \
  '{"configure":".*","write":".*","read":".*"}')" "PUT permissions"
# The admin may look at the service vhost in the UI.
check "$(api PUT "/permissions/$RMQ_VHOST/$RMQ_ADMIN" \
  '{"configure":".*","write":".*","read":".*"}')" "PUT admin permissions"
check "$(api DELETE /users/guest)" "DELETE guest"
log "rabbitmq: ready (vhost $RMQ_VHOST, user $RMQ_USER, UI http://127.0.0.1:15672 as $RMQ_ADMIN)"
