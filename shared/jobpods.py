"""How a Slurm job run and its Kubernetes objects find each other: names, labels, paths.

One run of a job is (job id, restart count): a requeued job runs again with a higher restart
count and gets fresh objects, so a redelivered event or a requeue never collides with the
previous run's leftovers. Everything here is pure and shared by the launcher, the runner and
the collector.
"""

from __future__ import annotations

from pathlib import Path

JOB_NAMESPACE = "slurm-jobs"
NAS_CLAIM = "nas"

LABEL_JOB_ID = "slurm-k8s.io/job-id"
LABEL_RESTART = "slurm-k8s.io/restart-count"
LABEL_USER = "slurm-k8s.io/user"
LABEL_UID = "slurm-k8s.io/uid"
LABEL_SUBMITTED = "slurm-k8s.io/submit-time"
"""With the job id, names one job even if slurmctld reuses ids (after its state is lost)."""
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGED_BY = "slurm-k8s"


def run_name(job_id: int, restart_count: int) -> str:
    """The name shared by a run's Pod and its per-run objects, e.g. ``job-42-r0``."""
    return f"job-{job_id}-r{restart_count}"


def run_labels(job_id: int, restart_count: int, user: str) -> dict[str, str]:
    """Labels linking a Kubernetes object to its Slurm job, run and user."""
    return {
        LABEL_JOB_ID: str(job_id),
        LABEL_RESTART: str(restart_count),
        LABEL_USER: user,
        LABEL_MANAGED: MANAGED_BY,
    }


def handoff_dir(state_dir: Path) -> Path:
    """Where the launcher leaves each run's credentials for its batch step (mode 0711)."""
    return state_dir / "handoff"


def handoff_path(state_dir: Path, job_id: int, restart_count: int) -> Path:
    """The kubeconfig a run's batch step uses to follow its own Pod (owner-only file)."""
    return handoff_dir(state_dir) / f"{run_name(job_id, restart_count)}.kubeconfig"


def refusal_path(state_dir: Path, job_id: int, restart_count: int) -> Path:
    """Where the launcher tells a run's batch step it gets no Pod, and why (owner-only file)."""
    return handoff_dir(state_dir) / f"{run_name(job_id, restart_count)}.refused"
