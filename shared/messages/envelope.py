"""The versioned envelope every message travels in, and its one encoder/decoder.

A body is a frozen pydantic model with a ``type`` literal; the envelope adds identity and time.
Unknown fields are rejected at every level, so a producer that drifts from the contract fails
loudly at the consumer instead of being half-understood. ``message_id`` is derived from the
body's idempotency key, so two publications of the same fact carry the same id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.errors import DecodeError
from shared.messages.files import FileDetected
from shared.messages.jobs import JobEnded, JobRejected, JobStarted, JobSubmitted
from shared.messages.pods import PodFinished, PodLaunched

SCHEMA_VERSION: Literal[1] = 1
_NAMESPACE = uuid.UUID("6f1d8a52-4c1e-4f5b-9a57-1d2d0b3e9c11")

Body = Annotated[
    FileDetected | JobSubmitted | JobRejected | JobStarted | JobEnded | PodLaunched | PodFinished,
    Field(discriminator="type"),
]


class Envelope(BaseModel):
    """One message on the wire: schema version, identity, time and a typed body."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    message_id: uuid.UUID
    occurred_at: datetime
    body: Body

    @classmethod
    def wrap(cls, body: Body, *, occurred_at: datetime | None = None) -> Envelope:
        """Put a body in an envelope whose id is derived from the body's idempotency key."""
        return cls(
            message_id=uuid.uuid5(_NAMESPACE, f"{body.type}:{body.idempotency_key}"),
            occurred_at=occurred_at or datetime.now(UTC),
            body=body,
        )

    @property
    def type(self) -> str:
        """The routing key: the body's type, e.g. ``job.started``."""
        return self.body.type

    @property
    def job_id(self) -> int | None:
        """The Slurm job this message is about, if any (a file event has none yet)."""
        job_id: int | None = getattr(self.body, "job_id", None)
        return job_id


_adapter: TypeAdapter[Envelope] = TypeAdapter(Envelope)


def encode(envelope: Envelope) -> bytes:
    """Serialise an envelope to JSON bytes."""
    return envelope.model_dump_json().encode()


def decode(data: bytes) -> Envelope:
    """Parse JSON bytes into an envelope.

    Raises:
        DecodeError: the bytes are not a valid envelope of a known type and version.
    """
    try:
        return _adapter.validate_json(data)
    except ValidationError as exc:
        raise DecodeError(f"not a valid slurm-k8s message: {exc.error_count()} error(s)") from exc
