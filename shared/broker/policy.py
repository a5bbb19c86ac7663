"""The one ack policy: what happens to a message after its handler ran (or failed).

Pure and small on purpose, so every branch is unit-tested: success acks; a permanent error
(bad input, decode failure) dead-letters at once; anything else is retried with exponential
backoff and dead-lettered once the retries are spent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from shared.errors import PermanentError, TransientError

RETRY_COUNT_HEADER = "x-retry-count"
DELIVERY_COUNT_HEADER = "x-delivery-count"
"""Set by quorum queues on a redelivery: how many deliveries ended without an ack or nack."""
DEAD_REASON_HEADER = "x-slurmk8s-dead-reason"
"""Why the consumer dead-lettered a message, in words (``slurmk8s replay`` shows it)."""
DEAD_AT_HEADER = "x-slurmk8s-dead-at"
"""When it was dead-lettered (ISO 8601, UTC)."""


class Action(Enum):
    """What the adapter does with the delivery."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Decision:
    """An action, and for retries the delay and the attempt number to record."""

    action: Action
    delay_s: float = 0.0
    attempt: int = 0
    reason: str = ""
    """For a dead-letter: why, in words an operator acts on (logged and kept in a header)."""


def backoff_s(attempt: int, *, base: float = 1.0, cap: float = 120.0) -> float:
    """Exponential backoff with full jitter in the upper half: 1, 2, 4 … seconds, capped."""
    ceiling: float = min(cap, base * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def decide(error: BaseException | None, previous_retries: int, max_retries: int) -> Decision:
    """Decide the fate of a delivery.

    Args:
        error: what the handler raised, or None on success.
        previous_retries: how many times this message was already retried.
        max_retries: the retry budget before dead-lettering.
    """
    if error is None:
        return Decision(Action.ACK)
    what = _describe(error)
    if isinstance(error, PermanentError):
        return Decision(Action.DEAD_LETTER, reason=f"cannot be processed: {what}")
    attempt = previous_retries + 1
    if attempt > max_retries:
        return Decision(
            Action.DEAD_LETTER,
            attempt=attempt,
            reason=f"still failing after {max_retries} retries: {what}",
        )
    delay = backoff_s(attempt)
    if isinstance(error, TransientError) and error.delay is not None:
        delay = max(delay, error.delay)
    return Decision(Action.RETRY, delay_s=delay, attempt=attempt)


def poison(deliveries: int, delivery_limit: int) -> Decision | None:
    """Dead-letter a message the consumer never finished handling, before the broker does.

    A message whose handling kills the consumer (or its connection) is redelivered without an
    ack; the quorum queue counts those deliveries and drops it into the dead-letter queue at
    ``delivery_limit``, where no code of ours sees it. On the last delivery it allows, the
    consumer dead-letters it itself, so it gets a reason and an answer like any other.

    Args:
        deliveries: the ``x-delivery-count`` header (0 on a first delivery).
        delivery_limit: the work queue's ``x-delivery-limit``.
    """
    if deliveries < delivery_limit - 1:
        return None
    return Decision(
        Action.DEAD_LETTER,
        reason=f"delivered {deliveries + 1} times without being finished: the service stopped "
        "or lost its connection while handling it each time",
    )


def _describe(error: BaseException) -> str:
    """``Type: message`` on one line, bounded (it travels in a header and a log line)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500]
