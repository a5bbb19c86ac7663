#!/usr/bin/env bash
# The seed's naive NAS door, as a baseline for `make bench`: one inotifywait loop that takes a
# file when its writer closes it (or it is renamed in), checks the shebang and #K8S_IMAGE,
# runs sbatch as the file's owner and moves the file away. No stability check beyond
# CLOSE_WRITE, no journal, no idempotency, no validation of options, no receipts.
#   naive_loop.sh WATCH_DIR DONE_DIR     (runs until killed)
set -uo pipefail
watch=$1 done_dir=$2
inotifywait -m -q -e close_write -e moved_to --format '%w%f' "$watch" | while read -r f; do
  [ -f "$f" ] || continue
  head -c 2 "$f" | grep -q '^#!' || { mv "$f" "$done_dir/"; continue; }
  grep -q '^#K8S_IMAGE' "$f" || { mv "$f" "$done_dir/"; continue; }
  owner=$(stat -c %U "$f")
  (cd "/mnt/test-k8s/home/$owner" 2>/dev/null || cd /tmp
   runuser -u "$owner" -- sbatch --parsable <"$f" >/dev/null 2>&1)
  mv "$f" "$done_dir/"
done
