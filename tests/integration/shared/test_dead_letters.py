"""Errors that mean what they say, on the lab's real broker (each test in a fresh vhost).

A handler's OSError is retried, not taken for a lost connection; a message given up on lands in
its dead-letter queue with a reason, after the service's answer; ``slurmk8s replay`` lists it
without changing anything and requeues it with ``--yes``; the queues are declared bounded, and
a queue declared earlier without bounds is used as it is.
"""

from __future__ import annotations

import errno
import io
import subprocess
import threading
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlsplit

import pika
import pytest

from shared.broker import VALIDATOR, Consumer, Publisher
from shared.broker.connection import connect, declare_topology
from shared.broker.consumer import DeadLetterAnswer
from shared.broker.policy import DEAD_REASON_HEADER
from shared.broker.topology import DEAD_MAX_LENGTH, WORK_MAX_LENGTH
from shared.config import BrokerSettings
from shared.errors import PermanentError
from shared.messages import Envelope, FileDetected
from shared.replay import run as replay
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def _detected(n: int = 0) -> Envelope:
    return Envelope.wrap(
        FileDetected(
            path=f"/nas/submit/{n}.sh", size=1, mtime_ns=n, sha256="b" * 64, owner_uid=2001
        )
    )


def _settings(url: str) -> BrokerSettings:
    return BrokerSettings(AMQP_URL=url, AMQP_MAX_RETRIES=2, AMQP_CONNECT_ATTEMPTS=3)


def _consume(
    settings: BrokerSettings,
    handler: Callable[[Envelope], Sequence[Envelope]],
    answer: DeadLetterAnswer | None = None,
) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    consumer = Consumer(settings, VALIDATOR, handler, stop, on_dead_letter=answer)
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    return stop, thread


def _depth(url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _dead_headers(url: str) -> dict[str, object]:
    """The headers of the first dead letter, left in its queue (nacked back)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        method, properties, _ = channel.basic_get(VALIDATOR.dead_queue, auto_ack=False)
        assert method is not None
        channel.basic_nack(method.delivery_tag, requeue=True)
        return dict(properties.headers or {})
    finally:
        connection.close()


def test_an_oserror_in_the_handler_is_retried_on_the_same_connection(vhost_url: str) -> None:
    settings = _settings(vhost_url)
    calls: list[int] = []

    def handler(envelope: Envelope) -> Sequence[Envelope]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return []

    stop, thread = _consume(settings, handler)
    publisher = Publisher(settings)
    try:
        publisher.publish(_detected())
        wait_for(
            "the retried message to succeed", lambda: len(calls) >= 2, timeout=60, interval=0.2
        )
    finally:
        stop.set()
        thread.join(timeout=30)
        publisher.close()
    assert len(calls) == 2
    assert _depth(vhost_url, VALIDATOR.dead_queue) == 0


def test_a_dead_letter_has_a_reason_and_an_answer_and_replay_requeues_it(vhost_url: str) -> None:
    settings = _settings(vhost_url)
    answered: list[str] = []
    fixed = threading.Event()
    handled: list[Envelope] = []

    def handler(envelope: Envelope) -> Sequence[Envelope]:
        if not fixed.is_set():
            raise PermanentError("the policy file is broken")
        handled.append(envelope)
        return []

    stop, thread = _consume(settings, handler, lambda _env, why: answered.append(why))
    publisher = Publisher(settings)
    try:
        publisher.publish(_detected(1))
        wait_for(
            "the message in the dead-letter queue",
            lambda: _depth(vhost_url, VALIDATOR.dead_queue) == 1,
            timeout=60,
            interval=0.2,
        )
        reason = _dead_headers(vhost_url)[DEAD_REASON_HEADER]
        assert reason == "cannot be processed: PermanentError: the policy file is broken"
        assert answered == [reason]

        listing = io.StringIO()
        assert replay(settings, [VALIDATOR], apply=False, limit=100, out=listing) == 0
        assert "the policy file is broken" in listing.getvalue()
        assert "dry run" in listing.getvalue()
        assert _depth(vhost_url, VALIDATOR.dead_queue) == 1  # a dry run changes nothing

        fixed.set()
        assert replay(settings, [VALIDATOR], apply=True, limit=100, out=io.StringIO()) == 0
        wait_for("the replayed message handled", lambda: handled, timeout=60, interval=0.2)
    finally:
        stop.set()
        thread.join(timeout=30)
        publisher.close()
    assert _depth(vhost_url, VALIDATOR.dead_queue) == 0
    assert handled[0].body.idempotency_key == _detected(1).body.idempotency_key


def _arguments(vhost: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "arguments"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout


def test_queues_are_bounded_and_an_older_unbounded_queue_is_used_as_it_is(
    vhost_url: str,
) -> None:
    vhost = unquote(urlsplit(vhost_url).path.lstrip("/"))
    settings = _settings(vhost_url)
    connection = connect(settings)
    try:
        # A deployment from before the bounds: its dead queue has no arguments.
        connection.channel().queue_declare(VALIDATOR.dead_queue, durable=True)
        declare_topology(connection.channel())
        declare_topology(connection.channel())  # idempotent
    finally:
        connection.close()
    lines = {line.split("\t")[0]: line for line in _arguments(vhost).splitlines()}
    assert str(WORK_MAX_LENGTH) in lines[VALIDATOR.name]
    assert "reject-publish" in lines[VALIDATOR.retry_queue]
    assert str(DEAD_MAX_LENGTH) in lines["launcher.job-started.dead"]
    assert str(DEAD_MAX_LENGTH) not in lines[VALIDATOR.dead_queue]  # kept as it was
