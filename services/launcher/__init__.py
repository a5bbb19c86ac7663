"""The launcher: turns each job.started into the run's Pod on the node Slurm chose.

For a job whose batch script is our wrapper (``#K8S_IMAGE`` jobs), it reads the allocation
from Slurm, makes ``<NAS>/results/<jobid>/`` for the job's owner (``results``), creates the
run's objects in the jobs namespace (idempotently, named after the job id and restart count;
the Pod's scratch, tools mount and run shim are in ``podspec``, the tools' check in ``tools``),
hands the batch step a Pod-bound credential, and notes the Pod on the job's AdminComment. It
never waits for the Pod: the runner (the batch step) follows it.
"""
