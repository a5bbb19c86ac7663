# shellcheck shell=bash disable=SC2034  # variables are for the scripts that source this
# Sourced by the lab/rabbitmq scripts.
RMQ_STATE="$LAB_STATE/rabbitmq"
RMQ_CREDENTIALS="$RMQ_STATE/credentials"
RMQ_VHOST=slurm-k8s
RMQ_USER=slurmk8s
RMQ_ADMIN=labadmin

# Fast liveness without the Erlang CLI's start-up cost (~1 s a call). `-detached` writes no
# pid file and the node name is not on the command line: the lab's rabbitmq user runs
# one broker; `-s rabbit boot` tells it from the CLI tools' own short-lived Erlang VMs.
rmq_pid() { pgrep -u rabbitmq -f '^[^ ]*beam.smp .* -s rabbit boot' | head -1; }
rmq_running() { [ -n "$(rmq_pid)" ]; }
# `key=value` lines; values never contain spaces or quotes (hex).
rmq_cred() { sed -n "s/^$1=//p" "$RMQ_CREDENTIALS" 2>/dev/null; }
# Running and not a zombie (PID 1 here is not an init that reaps promptly).
rmq_proc_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
