"""Messages about Slurm jobs: submitted or rejected at the door, started and ended on a node."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.messages.base import MessageBody


class Problem(MessageBody):
    """One reason a job file was refused, tied to the line that caused it (0: whole file)."""

    line: int = Field(ge=0)
    message: str

    @property
    def idempotency_key(self) -> str:
        """Problems are parts of a rejection, never published alone."""
        return f"{self.line}:{self.message}"


class JobSubmitted(MessageBody):
    """sbatch accepted a job file from the NAS door, as its owner."""

    type: Literal["job.submitted"] = "job.submitted"
    job_id: int = Field(gt=0)
    user: str
    uid: int
    source_path: str = Field(description="Where the file was dropped.")
    receipt_path: str
    submission_key: str = Field(description="Recorded in the job's comment; see validator.")
    output_path: str
    submitted_at: datetime

    @property
    def idempotency_key(self) -> str:
        """One Slurm job id is one submission."""
        return str(self.job_id)


class JobRejected(MessageBody):
    """A job file was refused and moved to ``failed/`` with an error file beside it."""

    type: Literal["job.rejected"] = "job.rejected"
    source_path: str
    failed_path: str
    error_path: str
    sha256: str
    problems: tuple[Problem, ...]

    @property
    def idempotency_key(self) -> str:
        """The same content at the same place is refused once."""
        return f"{self.source_path}:{self.sha256}"


class _JobOnNode(MessageBody):
    """What Slurm's prolog and epilog know about a job on a node, from their environment."""

    job_id: int = Field(gt=0)
    restart_count: int = Field(ge=0)
    node: str
    user: str
    uid: int = Field(gt=0)
    gid: int = Field(ge=0)
    partition: str = ""
    gpus: str = Field(default="", description="SLURM_JOB_GPUS: GRES indices, e.g. '0,1'.")

    @property
    def idempotency_key(self) -> str:
        """One run of a job: a requeued job runs again with a higher restart count."""
        return f"{self.job_id}:r{self.restart_count}"


class JobStarted(_JobOnNode):
    """The prolog ran: Slurm allocated the node and is starting the batch step."""

    type: Literal["job.started"] = "job.started"


class JobEnded(_JobOnNode):
    """The epilog ran: the allocation is being released."""

    type: Literal["job.ended"] = "job.ended"
