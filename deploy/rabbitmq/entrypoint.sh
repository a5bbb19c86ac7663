#!/bin/sh
# Turns the official image's RABBITMQ_DEFAULT_* variables into a config file for Debian's
# RabbitMQ (deploy/rabbitmq/Dockerfile). The password never reaches a command line.
set -eu
: "${RABBITMQ_DEFAULT_USER:?set RABBITMQ_DEFAULT_USER (never guest)}"
: "${RABBITMQ_DEFAULT_PASS:?set RABBITMQ_DEFAULT_PASS}"
conf=/etc/rabbitmq/conf.d/00-defaults.conf
umask 077
{
  echo "default_user = $RABBITMQ_DEFAULT_USER"
  echo "default_pass = $RABBITMQ_DEFAULT_PASS"
  echo "default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}"
  echo "default_user_tags.administrator = true"
  echo "default_permissions.configure = .*"
  echo "default_permissions.read = .*"
  echo "default_permissions.write = .*"
} >"$conf"
exec "$@"
