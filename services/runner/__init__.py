"""The runner: the batch step of a ``#K8S_IMAGE`` job, following the job's Pod as the user.

Slurm runs it (through the wrapper job_submit.lua put in place of the user's script) as the
job's user; it holds the allocation exactly as long as the Pod's container runs. It waits for
the launcher's Pod-bound credential, prints a header, copies the container's log into the
job's output, prints the outcome and exits with the container's exit code. On SIGTERM
(scancel, time limit, requeue) it deletes the Pod and waits until it is gone. It never runs
the user's script itself and needs no privileges.
"""
