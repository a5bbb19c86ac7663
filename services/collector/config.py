"""The collector's settings (``COLLECTOR_*``), composed with the shared ones."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CollectorSettings(BaseSettings):
    """How the collector reaches Kubernetes and Slurm, and how often it sweeps."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    kubeconfig: Path | None = Field(
        default=None,
        alias="KUBECONFIG",
        description="KUBECONFIG; unset means in-cluster credentials.",
    )
    reconcile_interval_s: float = Field(
        default=60.0,
        alias="COLLECTOR_RECONCILE_INTERVAL",
        gt=0,
        description="The reconcile (services.collector.reconciling), also run at start. Only "
        "a lost event needs it, so a minute of delay is cheap; each costs five list calls, one "
        "squeue --json, a listing of submit/ and a few Slurm queries per leftover run.",
    )
    observe_interval_s: float = Field(
        default=2.0,
        alias="COLLECTOR_OBSERVE_INTERVAL",
        gt=0,
        description="The Pod observer: one Pod list per sweep, so a failure reason shows on "
        "the job (AdminComment) within seconds.",
    )
    relaunch_after_s: float = Field(
        default=30.0,
        alias="COLLECTOR_RELAUNCH_AFTER",
        gt=0,
        description="A slurm-k8s job running this long with neither a handoff nor a refusal "
        "from the launcher gets its job.started again (the runner waits 600 s for one).",
    )
    stale_file_after_s: float = Field(
        default=300.0,
        alias="COLLECTOR_STALE_FILE_AFTER",
        gt=0,
        description="A job file unchanged in submit/ this long gets its file.detected again "
        "(same submission key: the validator never submits it twice).",
    )
    pod_grace_s: int = Field(
        default=10,
        alias="COLLECTOR_POD_GRACE",
        ge=0,
        description="Termination grace when deleting a Pod. By the epilog the container has "
        "normally ended; this only bounds a stuck one.",
    )
    slurm_timeout_s: float = Field(
        default=15.0,
        alias="COLLECTOR_SLURM_TIMEOUT",
        description="Per-command limit for scontrol/sacct; healthy slurmctld answers in ms.",
    )
    kube_qps: float = Field(default=10.0, alias="COLLECTOR_KUBE_QPS", gt=0)
    kube_burst: int = Field(default=20, alias="COLLECTOR_KUBE_BURST", ge=1)
