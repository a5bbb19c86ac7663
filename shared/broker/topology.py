"""RabbitMQ topology as code: exchanges, each consumer's queue, its retry and dead-letter queues.

Names are what operators see in the management UI, so they say who consumes what:
``launcher.job-started`` is the launcher's queue of ``job.started`` events; ``….retry`` holds
messages waiting out a backoff; ``….dead`` holds what could not be processed. Every service
declares the whole topology at start (idempotent), so an event published before its consumer
ever ran is kept, not dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EVENTS_EXCHANGE = "slurm-k8s.events"
DEAD_LETTER_EXCHANGE = "slurm-k8s.dead"
JOURNAL_QUEUE = "slurm-k8s.journal"
JOURNAL_MAX_LENGTH = 10_000
DELIVERY_LIMIT = 20
WORK_MAX_LENGTH = 100_000
"""Messages a work (or retry) queue holds; past it the broker refuses publishes (nack), so the
publisher keeps the event (the watcher its file, the hook its spool) and tries again later."""
DEAD_MAX_LENGTH = 10_000
"""Dead-lettered messages kept for ``slurmk8s replay``; past it the consumer keeps a message in
its retry queue instead (the broker's own delivery-limit dead-lettering drops it: logged)."""


@dataclass(frozen=True)
class QueueSpec:
    """A consumer's work queue and the message types routed to it."""

    name: str
    routing_keys: tuple[str, ...]

    @property
    def retry_queue(self) -> str:
        """Where a message waits out its backoff before returning to ``name``."""
        return f"{self.name}.retry"

    @property
    def dead_queue(self) -> str:
        """Where messages that cannot be processed are kept for an operator."""
        return f"{self.name}.dead"


VALIDATOR = QueueSpec("validator.file-detected", ("file.detected",))
LAUNCHER = QueueSpec("launcher.job-started", ("job.started",))
COLLECTOR = QueueSpec("collector.job-ended", ("job.ended", "pod.finished"))
ALL_QUEUES = (VALIDATOR, LAUNCHER, COLLECTOR)


def work_queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    """Quorum queue (replicated, always durable) that dead-letters past the delivery limit."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": spec.name,
        # Poison messages that crash a consumer (connection loss counts as a delivery) end up
        # in the dead-letter queue instead of looping forever.
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-max-length": WORK_MAX_LENGTH,
        "x-overflow": "reject-publish",
    }


def retry_queue_arguments(spec: QueueSpec) -> dict[str, Any]:
    """Classic durable queue whose expired messages flow back to the work queue.

    RabbitMQ expires per-message TTLs only at the head of a queue, so a short backoff queued
    behind a long one waits for it; retries are rare and the backoff is capped at 2 minutes,
    so one queue per consumer is kept rather than one per delay.
    """
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": spec.name,
        "x-max-length": WORK_MAX_LENGTH,
        "x-overflow": "reject-publish",
    }


def dead_queue_arguments() -> dict[str, Any]:
    """Classic durable queue, bounded; a full one refuses new dead letters.

    Refusing keeps the oldest, which an operator may not have looked at yet (drop-head would
    lose them unseen).
    """
    return {"x-max-length": DEAD_MAX_LENGTH, "x-overflow": "reject-publish"}


def journal_arguments() -> dict[str, Any]:
    """Bounded record of recent events for operators and the CLI; oldest dropped first."""
    return {"x-max-length": JOURNAL_MAX_LENGTH, "x-overflow": "drop-head"}
