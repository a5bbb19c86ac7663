"""The launcher's view of a Slurm job: which states call for a Pod, and how long it may run.

Every command and its parsing live in ``shared.slurmctl``; the launcher reads jobs as
``JobStatus`` (the job's own separator-checked ``squeue`` record, or ``squeue --json``), never
from ``scontrol show job`` text, where a job name can forge any field.
"""

from __future__ import annotations

from shared.slurmctl import JobStatus

RUNNABLE_STATES = frozenset({"RUNNING", "CONFIGURING"})
"""States in which a job.started event still calls for a Pod."""


def runnable(job: JobStatus) -> bool:
    """The job is starting or running (a Pod makes sense)."""
    return job.state in RUNNABLE_STATES
