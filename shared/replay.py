"""``slurmk8s replay``: show dead-lettered messages and, once the cause is fixed, requeue them.

A message is dead-lettered by the consumer adapter (``shared.broker.consumer``) when its retries
are spent, when it cannot be processed at all, or when it kept killing its consumer; each
carries the reason and the time in headers. This module reads the ``….dead`` queues without
taking anything out of them (a dry run, the default, only lists), and with ``--yes`` publishes
each message back to its work queue with its retry bookkeeping cleared, acknowledging the dead
copy only after the broker confirmed the new one: a message is never lost, at worst (a crash in
between) it is replayed twice, which every handler absorbs (idempotent on its key).

Only this module and ``shared.broker`` talk to the dead-letter queues.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import pika
import pika.exceptions

from shared.broker.connection import (
    CONNECTION_ERRORS,
    close_quietly,
    connect,
    copy_properties,
    declare_topology,
)
from shared.broker.policy import (
    DEAD_AT_HEADER,
    DEAD_REASON_HEADER,
    DELIVERY_COUNT_HEADER,
    RETRY_COUNT_HEADER,
)
from shared.broker.topology import ALL_QUEUES, QueueSpec
from shared.config import BrokerSettings
from shared.errors import BrokerUnavailable, DecodeError
from shared.messages import decode

EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE = 0, 1, 2
_BOOKKEEPING = (
    RETRY_COUNT_HEADER,
    DELIVERY_COUNT_HEADER,
    DEAD_REASON_HEADER,
    DEAD_AT_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)
"""Headers that describe a message's past failures; a replayed message starts afresh."""


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message as an operator needs to see it."""

    queue: str
    type: str
    key: str
    dead_at: str
    reason: str


def describe(queue: str, properties: Any, body: bytes) -> DeadLetter:
    """What a dead message is and why it died (the broker's own reason when ours is absent)."""
    headers: dict[str, Any] = dict(properties.headers or {})
    try:
        envelope = decode(body)
        kind, key = envelope.type, envelope.body.idempotency_key
    except DecodeError:
        kind, key = str(properties.type or "?"), "(not a valid message)"
    reason = headers.get(DEAD_REASON_HEADER) or _broker_reason(headers)
    return DeadLetter(queue, kind, key, str(headers.get(DEAD_AT_HEADER, "?")), str(reason))


def _broker_reason(headers: dict[str, Any]) -> str:
    """The broker's ``x-first-death-reason`` (e.g. ``delivery_limit``), in words."""
    raw = headers.get("x-first-death-reason")
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    if raw == "delivery_limit":
        return "dead-lettered by the broker: redelivered past the queue's delivery limit"
    return f"dead-lettered by the broker ({raw or 'no reason recorded'})"


def fresh_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """The headers a replayed message is published with: trace context kept, failures dropped."""
    return {k: v for k, v in (headers or {}).items() if k not in _BOOKKEEPING}


def replay_queue(
    channel: Any, spec: QueueSpec, *, apply: bool, limit: int, out: TextIO
) -> tuple[int, bool]:
    """List (and with ``apply`` requeue) up to ``limit`` messages of one dead-letter queue.

    Messages are taken with ``basic_get`` and left unacknowledged while listing, so a dry run
    changes nothing: they return to the queue, in order, when the channel closes.

    Returns:
        How many messages were seen (or requeued), and whether the broker refused a requeue
        (the work queue is full): then the rest stays dead.
    """
    count = 0
    while count < limit:
        method, properties, body = channel.basic_get(spec.dead_queue, auto_ack=False)
        if method is None:
            break
        letter = describe(spec.dead_queue, properties, body)
        print(
            f"{letter.queue}\t{letter.type}\t{letter.key}\t{letter.dead_at}\t{letter.reason}",
            file=out,
        )
        if apply:
            try:
                channel.basic_publish(
                    exchange="",
                    routing_key=spec.name,
                    body=body,
                    properties=copy_properties(properties, fresh_headers(properties.headers)),
                    mandatory=True,
                )
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                print(f"{spec.name} refused the message (full?); the rest stays dead", file=out)
                return count, True
            channel.basic_ack(method.delivery_tag)
        count += 1
    return count, False


def run(
    settings: BrokerSettings,
    specs: Sequence[QueueSpec],
    *,
    apply: bool,
    limit: int,
    out: TextIO = sys.stdout,
) -> int:
    """Replay (or list) the dead letters of ``specs``; returns the exit status.

    Raises:
        BrokerUnavailable: RabbitMQ could not be reached or went away.
    """
    connection = connect(settings)
    refused = False
    total = 0
    try:
        channel = connection.channel()
        declare_topology(channel)
        channel.confirm_delivery()
        for spec in specs:
            seen, refused = replay_queue(channel, spec, apply=apply, limit=limit - total, out=out)
            total += seen
            if refused or total >= limit:
                break
    except CONNECTION_ERRORS as exc:
        raise BrokerUnavailable(f"lost RabbitMQ while replaying: {exc!r}") from exc
    finally:
        close_quietly(connection)  # unacked (listed only) messages go back to their queues
    if apply:
        print(f"requeued {total} message(s)", file=out)
    else:
        print(
            f"{total} dead-lettered message(s); nothing changed (dry run). Fix the cause, "
            "then run again with --yes to requeue them",
            file=out,
        )
    return EXIT_REFUSED if refused else EXIT_OK


def service_of(spec: QueueSpec) -> str:
    """The consuming service's name, as ``--queue`` takes it (``validator``)."""
    return spec.name.split(".")[0]


def command(args: argparse.Namespace) -> int:
    """``slurmk8s replay [--queue NAME]... [--limit N] [--yes]``."""
    wanted = set(args.queue or ())
    specs = [s for s in ALL_QUEUES if not wanted or service_of(s) in wanted]
    with contextlib.suppress(BrokenPipeError):
        try:
            return run(BrokerSettings(), specs, apply=args.yes, limit=args.limit)
        except BrokerUnavailable as exc:
            print(f"slurmk8s: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    return EXIT_OK
