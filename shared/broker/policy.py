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
    if isinstance(error, PermanentError):
        return Decision(Action.DEAD_LETTER)
    attempt = previous_retries + 1
    if attempt > max_retries:
        return Decision(Action.DEAD_LETTER, attempt=attempt)
    delay = backoff_s(attempt)
    if isinstance(error, TransientError) and error.delay is not None:
        delay = max(delay, error.delay)
    return Decision(Action.RETRY, delay_s=delay, attempt=attempt)
