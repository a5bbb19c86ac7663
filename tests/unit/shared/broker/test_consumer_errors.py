"""The consumer's error paths: handler errors follow the ack policy, dead letters get a reason."""

import errno
import threading
from types import SimpleNamespace
from typing import Any

import pika.exceptions
import pytest

from shared.broker import VALIDATOR, Consumer
from shared.broker.policy import DEAD_REASON_HEADER, DELIVERY_COUNT_HEADER, RETRY_COUNT_HEADER
from shared.broker.topology import DEAD_LETTER_EXCHANGE, DELIVERY_LIMIT
from shared.config import BrokerSettings
from shared.errors import BrokerUnavailable, PermanentError
from shared.messages import Envelope, FileDetected, encode

pytestmark = pytest.mark.unit


class Connection:
    """A BlockingConnection stand-in whose pump returns when woken."""

    def __init__(self, *, lost: bool = False) -> None:
        self.woken = threading.Event()
        self.lost = lost

    def process_data_events(self, time_limit: float) -> None:
        if self.lost:
            raise pika.exceptions.StreamLostError("gone")
        self.woken.wait(timeout=time_limit)
        self.woken.clear()

    def add_callback_threadsafe(self, callback: Any) -> None:
        callback()
        self.woken.set()


class Channel:
    """Records acks, nacks and publishes; ``refuse`` makes publishes to one exchange nacked."""

    def __init__(self, refuse: str | None = None) -> None:
        self.acks: list[int] = []
        self.nacks: list[tuple[int, bool]] = []
        self.published: list[dict[str, Any]] = []
        self.refuse = refuse

    def basic_ack(self, tag: int) -> None:
        self.acks.append(tag)

    def basic_nack(self, tag: int, requeue: bool) -> None:
        self.nacks.append((tag, requeue))

    def basic_publish(self, **kwargs: Any) -> None:
        if self.refuse is not None and kwargs["exchange"] == self.refuse:
            raise pika.exceptions.NackError([])
        self.published.append(kwargs)


def _envelope() -> Envelope:
    return Envelope.wrap(
        FileDetected(path="/s/a.sh", size=1, mtime_ns=1, sha256="0" * 64, owner_uid=2001)
    )


def _deliver(
    handler: Any,
    *,
    headers: dict[str, Any] | None = None,
    budget: float = 60.0,
    answer: Any = None,
    out: Channel | None = None,
    connection: Connection | None = None,
) -> tuple[Channel, Channel]:
    settings = BrokerSettings(
        AMQP_URL="amqp://x:y@127.0.0.1:1/v", AMQP_MAX_RETRIES=3, AMQP_HANDLER_BUDGET=budget
    )
    consumer = Consumer(settings, VALIDATOR, handler, threading.Event(), on_dead_letter=answer)
    channel, out = Channel(), out or Channel()
    props = pika.BasicProperties(
        content_type="application/json", message_id="m", type="file.detected", headers=headers
    )
    try:
        consumer._deliver(
            connection or Connection(),  # type: ignore[arg-type]
            channel,  # type: ignore[arg-type]
            out,  # type: ignore[arg-type]
            SimpleNamespace(delivery_tag=7),
            props,
            encode(_envelope()),
        )
    finally:
        consumer._executor.shutdown(wait=False)
    return channel, out


def test_an_oserror_inside_the_handler_is_retried_not_taken_for_a_lost_connection() -> None:
    def handler(_: Envelope) -> list[Envelope]:
        raise OSError(errno.ENOSPC, "No space left on device")

    channel, out = _deliver(handler)
    assert channel.acks == [7]
    (copy,) = out.published
    assert copy["routing_key"] == VALIDATOR.retry_queue
    assert copy["properties"].headers[RETRY_COUNT_HEADER] == 1


def test_a_broker_error_raised_by_a_handler_is_its_failure_too() -> None:
    # A handler that publishes on its own connection may lose it; that is not ours.
    def handler(_: Envelope) -> list[Envelope]:
        raise BrokerUnavailable("the handler's own publisher lost RabbitMQ")

    channel, out = _deliver(handler)
    assert channel.acks == [7]
    assert out.published[0]["routing_key"] == VALIDATOR.retry_queue


def test_only_the_consumers_own_connection_loss_propagates() -> None:
    from shared.broker.consumer import _TransportLost

    with pytest.raises(_TransportLost):
        _deliver(lambda _: threading.Event().wait(5) and [], connection=Connection(lost=True))


def test_a_handler_over_its_budget_is_a_transient_failure() -> None:
    release = threading.Event()

    def handler(_: Envelope) -> list[Envelope]:
        release.wait(timeout=10)
        return [_envelope()]  # late: must never be published

    try:
        channel, out = _deliver(handler, budget=0.2)
    finally:
        release.set()
    assert channel.acks == [7]
    (copy,) = out.published
    assert copy["routing_key"] == VALIDATOR.retry_queue


def test_a_permanent_error_is_dead_lettered_with_its_reason_after_the_answer() -> None:
    answered: list[tuple[str, str]] = []

    def handler(_: Envelope) -> list[Envelope]:
        raise PermanentError("not a file event")

    channel, out = _deliver(
        handler, answer=lambda env, why: answered.append((env.body.idempotency_key, why))
    )
    assert channel.acks == [7]
    assert channel.nacks == []
    (dead,) = out.published
    assert dead["exchange"] == DEAD_LETTER_EXCHANGE
    assert dead["routing_key"] == VALIDATOR.name
    reason = dead["properties"].headers[DEAD_REASON_HEADER]
    assert "PermanentError: not a file event" in reason
    assert answered == [(_envelope().body.idempotency_key, reason)]


def test_retries_spent_dead_letter_and_a_failing_answer_does_not_stop_it() -> None:
    def handler(_: Envelope) -> list[Envelope]:
        raise OSError(errno.EIO, "I/O error")

    def answer(_: Envelope, __: str) -> None:
        raise OSError(errno.EIO, "the NAS is gone too")

    channel, out = _deliver(handler, headers={RETRY_COUNT_HEADER: 3}, answer=answer)
    (dead,) = out.published
    assert (
        "still failing after 3 retries: OSError" in dead["properties"].headers[DEAD_REASON_HEADER]
    )
    assert channel.acks == [7]


def test_a_full_dead_letter_queue_keeps_the_message_in_the_retry_queue() -> None:
    def handler(_: Envelope) -> list[Envelope]:
        raise PermanentError("bad")

    channel, out = _deliver(handler, out=Channel(refuse=DEAD_LETTER_EXCHANGE))
    (kept,) = out.published
    assert kept["routing_key"] == VALIDATOR.retry_queue
    assert channel.acks == [7]


def test_a_message_that_kept_killing_the_consumer_is_dead_lettered_unhandled() -> None:
    calls: list[Envelope] = []

    def handler(env: Envelope) -> list[Envelope]:
        calls.append(env)
        return []

    channel, out = _deliver(handler, headers={DELIVERY_COUNT_HEADER: DELIVERY_LIMIT - 1})
    assert calls == []
    (dead,) = out.published
    assert "times without being finished" in dead["properties"].headers[DEAD_REASON_HEADER]
    assert channel.acks == [7]
