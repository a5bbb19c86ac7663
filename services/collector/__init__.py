"""The collector: finishes each job run once Slurm says it ended, and cleans up after it.

It consumes ``job.ended`` (the epilog) and ``pod.finished``; for a finished run it completes
the job's output file if the runner could not, writes ``<output>.summary.json`` for the user,
records the outcome on the Slurm job, and deletes the run's Kubernetes objects and handoff
credentials. A periodic reconcile does the same for labelled objects whose job Slurm reports
explicitly finished; "not found" and errors are never taken as finished (fail closed).
"""
