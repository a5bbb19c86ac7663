"""The launcher's settings (``LAUNCHER_*``), composed with the shared ones in ``__main__``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LauncherSettings(BaseSettings):
    """How the launcher reaches Kubernetes and Slurm, and what it puts in each Pod."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    kubeconfig: Path | None = Field(
        default=None,
        alias="KUBECONFIG",
        description="KUBECONFIG; unset means in-cluster credentials.",
    )
    node_map: str = Field(
        default="",
        alias="LAUNCHER_NODE_MAP",
        description="Slurm node → Kubernetes node, 'slurm1=k8s-a,slurm2=k8s-b'. A node not "
        "listed keeps its name: on a normal install both are the host's short name.",
    )
    api_server: str = Field(
        default="",
        alias="LAUNCHER_API_SERVER",
        description="API server URL written into the handoff kubeconfig for the batch step; "
        "empty means the launcher's own (right when both run on cluster hosts).",
    )
    token_max_s: int = Field(
        default=7 * 24 * 3600,
        alias="LAUNCHER_TOKEN_MAX",
        ge=600,
        description="Upper bound of a handoff token's lifetime. Each token lives for the job's "
        "time limit plus an hour (capped here); it dies with its Pod anyway (Pod-bound).",
    )
    default_shm_mb: int = Field(
        default=64,
        alias="LAUNCHER_DEFAULT_SHM_MB",
        ge=1,
        description="/dev/shm size without #K8S_SHM: Docker's default, enough for small jobs.",
    )
    termination_grace_s: int = Field(
        default=20,
        alias="LAUNCHER_TERMINATION_GRACE",
        ge=0,
        description="Pod terminationGracePeriodSeconds: Slurm's KillWait (30 s) minus 10 s, so "
        "the container is gone before Slurm SIGKILLs the batch step that waits for it.",
    )
    deadline_margin_s: int = Field(
        default=300,
        alias="LAUNCHER_DEADLINE_MARGIN",
        ge=0,
        description="activeDeadlineSeconds = time limit + this: a safety net only, Slurm's "
        "time limit (via the runner) ends the Pod first.",
    )
    image_pull_policy: str = Field(
        default="Always",
        alias="LAUNCHER_IMAGE_PULL_POLICY",
        description="Always: a cached private image must not run for a user who could not "
        "pull it (AlwaysPullImages semantics); pulls from the site registry are cheap.",
    )
    tools_dir: str = Field(
        default="slurm-jobs/.tools",
        alias="LAUNCHER_TOOLS_DIR",
        min_length=1,
        description="The folder, relative to the NAS root, holding the static bash and busybox "
        "every job Pod runs its script with (mounted read-only at /slurm-k8s-tools). It and "
        "every folder above it must be root's and writable by no one else "
        "(services/launcher/tools.py); lab/nas/up.sh installs Debian's bash-static and "
        "busybox-static there.",
    )
    scratch_size: str = Field(
        default="10Gi",
        alias="LAUNCHER_SCRATCH_SIZE",
        pattern=r"^[1-9][0-9]*(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="sizeLimit of each Pod's scratch emptyDir, which holds /workspace and "
        "/results together (node disk, not memory). A Pod whose scratch grows past it is "
        "evicted by the kubelet and the job fails.",
    )
    slurm_timeout_s: float = Field(default=15.0, alias="LAUNCHER_SLURM_TIMEOUT")
    kube_qps: float = Field(default=20.0, alias="LAUNCHER_KUBE_QPS", gt=0)
    kube_burst: int = Field(default=40, alias="LAUNCHER_KUBE_BURST", ge=1)

    def k8s_node(self, slurm_node: str) -> str:
        """The Kubernetes node of a Slurm node (identity unless mapped)."""
        return parse_node_map(self.node_map).get(slurm_node, slurm_node)


def parse_node_map(text: str) -> dict[str, str]:
    """``'a=x, b=y'`` → ``{'a': 'x', 'b': 'y'}``; malformed items are ignored."""
    mapping: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if sep and key.strip() and value.strip():
            mapping[key.strip()] = value.strip()
    return mapping
