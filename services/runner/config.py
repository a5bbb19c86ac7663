"""The runner's settings: the batch step's environment, then ``/etc/slurm-k8s/runner.env``.

Slurm hands the batch step the submitter's environment, so nothing here is required: every
default matches a standard install (the lab's NAS at /mnt/test-k8s).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_FILE = Path("/etc/slurm-k8s/runner.env")


class RunnerSettings(BaseSettings):
    """Which run to follow, where its credential is, and how patient to be."""

    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, env_file=ENV_FILE
    )

    job_id: int = Field(alias="SLURM_JOB_ID", gt=0)
    restart_count: int = Field(
        default=0,
        alias="SLURM_RESTART_COUNT",
        ge=0,
        description="Set by Slurm only once the job has been requeued; absent means run 0.",
    )
    node: str = Field(default="", alias="SLURMD_NODENAME")
    stdout_path: str = Field(default="", alias="SLURM_K8S_STDOUT")
    nas_root: Path = Field(default=Path("/mnt/test-k8s"), alias="NAS_ROOT")
    handoff_timeout_s: float = Field(
        default=600.0,
        alias="RUNNER_HANDOFF_TIMEOUT",
        description="How long to wait for the launcher's credential; the launcher normally "
        "needs well under a second, a longer wait covers a launcher restart.",
    )
    poll_s: float = Field(
        default=0.5,
        alias="RUNNER_POLL",
        gt=0,
        description="Pod status reads until the container runs, and while it stops: one "
        "GET each, for a few seconds per job.",
    )
    running_poll_s: float = Field(
        default=10.0,
        alias="RUNNER_RUNNING_POLL",
        gt=0,
        description="Pod status reads while the container runs. The end of the log stream "
        "wakes the runner at once, so this only bounds how late an end without one is seen; "
        "slow enough that a thousand running jobs cost the API server ~100 GETs/s.",
    )
    pull_grace_s: float = Field(
        default=20.0,
        alias="RUNNER_PULL_GRACE",
        description="An image pull may fail this long (kubelet retries) before the job fails.",
    )
    start_timeout_s: float = Field(
        default=180.0,
        alias="RUNNER_START_TIMEOUT",
        description="The kubelet must acknowledge the Pod within this (else: node not ready, "
        "requeue).",
    )
    delete_grace_s: int = Field(
        default=10,
        alias="RUNNER_DELETE_GRACE",
        description="Grace for the container on scancel/timeout; well inside KillWait (30 s).",
    )
    gone_timeout_s: float = Field(
        default=25.0,
        alias="RUNNER_GONE_TIMEOUT",
        description="How long to wait for the deleted Pod to disappear (< KillWait).",
    )
    split_streams: bool = Field(
        default=True,
        alias="RUNNER_SPLIT_STREAMS",
        description="With a separate --error file, read stdout and stderr as separate "
        "streams (the API's stream=Stdout|Stderr, Kubernetes ≥ 1.32 with "
        "PodLogsQuerySplitStreams).",
    )

    @property
    def state_dir(self) -> Path:
        """The services' bookkeeping folder on the NAS (as ``NasSettings.state_dir``)."""
        return self.nas_root / "slurm-jobs" / ".state"
