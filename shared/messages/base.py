"""The base every message body derives from: frozen, strict, and able to name its own key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class MessageBody(BaseModel):
    """A fact one service tells the others. Subclasses add a ``type`` literal and fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    def idempotency_key(self) -> str:
        """What makes two publications "the same fact"; consumers deduplicate on it."""
        raise NotImplementedError
