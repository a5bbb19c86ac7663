#!/usr/bin/env bash
# One line: `rabbitmq: up <version>` when the management API answers as labadmin.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib.sh"
. "$here/common.sh"
version=
if rmq_running; then
  version=$(printf 'user = "%s:%s"\n' "$RMQ_ADMIN" "$(rmq_cred admin_password)" \
    | curl -sf -m 5 -K - http://127.0.0.1:15672/api/overview 2>/dev/null | jq -r '.rabbitmq_version // empty' 2>/dev/null)
  [ -n "$version" ] || version="(running, management API not answering)"
fi
if [ -n "$version" ]; then echo "rabbitmq: up $version"; else echo "rabbitmq: down"; fi
