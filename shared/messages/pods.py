"""Messages about the Pods that run jobs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.messages.base import MessageBody


class _PodOfJob(MessageBody):
    job_id: int = Field(gt=0)
    restart_count: int = Field(ge=0)
    namespace: str
    pod_name: str

    @property
    def idempotency_key(self) -> str:
        """One Pod per run of a job."""
        return f"{self.job_id}:r{self.restart_count}"


class PodLaunched(_PodOfJob):
    """The launcher created (or found already created) the Pod of a job run."""

    type: Literal["pod.launched"] = "pod.launched"
    node: str


class PodFinished(_PodOfJob):
    """A job's Pod reached a terminal state, or could not start."""

    type: Literal["pod.finished"] = "pod.finished"
    phase: str
    exit_code: int | None = None
    reason: str = ""
