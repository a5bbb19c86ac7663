"""The launcher: turns each job.started into the run's Pod on the node Slurm chose.

For a job whose batch script is our wrapper (``#K8S_IMAGE`` jobs), it reads the allocation
from Slurm, creates the run's objects in the jobs namespace (idempotently, named after the job
id and restart count), hands the batch step a Pod-bound credential, and notes the Pod on the
job's AdminComment. It never waits for the Pod: the runner (the batch step) follows it.
"""
