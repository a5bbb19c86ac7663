"""The RabbitMQ adapter against the lab's real broker, each test in a fresh vhost."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pika
import pika.exceptions
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.broker import VALIDATOR, Consumer, Publisher
from shared.config import BrokerSettings, TelemetrySettings
from shared.errors import PermanentError, TransientError
from shared.messages import Envelope, FileDetected, JobRejected
from shared.telemetry import configure_telemetry
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def _detected(n: int = 0) -> Envelope:
    return Envelope.wrap(
        FileDetected(
            path=f"/nas/submit/{n}.sh", size=1, mtime_ns=n, sha256="a" * 64, owner_uid=2001
        )
    )


def _rejection_for(envelope: Envelope) -> Envelope:
    body = envelope.body
    assert isinstance(body, FileDetected)
    return Envelope.wrap(
        JobRejected(
            source_path=body.path, failed_path="f", error_path="e", sha256=body.sha256, problems=()
        )
    )


def _run_consumer(
    settings: BrokerSettings, handler: Callable[[Envelope], Sequence[Envelope]]
) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=Consumer(settings, VALIDATOR, handler, stop).run, daemon=True)
    thread.start()
    return stop, thread


def _drain(
    url: str, queue: str, want: int, deadline_s: float = 60
) -> list[pika.spec.BasicProperties]:
    got: list[pika.spec.BasicProperties] = []
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()

        def take() -> bool:
            method, properties, _body = channel.basic_get(queue, auto_ack=True)
            if method is not None:
                got.append(properties)
            return len(got) >= want

        wait_for(f"{want} message(s) in {queue}", take, timeout=deadline_s, interval=0.2)
    finally:
        connection.close()
    return got


def _declared(url: str, queue: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()


def _settings(url: str) -> BrokerSettings:
    return BrokerSettings(AMQP_URL=url, AMQP_MAX_RETRIES=2, AMQP_CONNECT_ATTEMPTS=3)


def test_success_publishes_follow_ups_then_acks(vhost_url: str) -> None:
    # Given a consumer whose handler answers each file with a rejection
    seen: list[Envelope] = []

    def handler(envelope: Envelope) -> Sequence[Envelope]:
        seen.append(envelope)
        return [_rejection_for(envelope)]

    settings = _settings(vhost_url)
    stop, thread = _run_consumer(settings, handler)
    publisher = Publisher(settings)
    try:
        # When three files are announced
        for n in range(3):
            publisher.publish(_detected(n))
        # Then the journal holds the three announcements and three follow-ups
        assert len(_drain(vhost_url, "slurm-k8s.journal", 6)) == 6
    finally:
        publisher.close()
        stop.set()
        thread.join(30)
    assert {e.message_id for e in seen} == {_detected(n).message_id for n in range(3)}


def test_transient_errors_are_retried_then_succeed(vhost_url: str) -> None:
    attempts: list[int] = []

    def handler(envelope: Envelope) -> Sequence[Envelope]:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("slurmctld is restarting")
        return []

    settings = _settings(vhost_url)
    stop, thread = _run_consumer(settings, handler)
    publisher = Publisher(settings)
    try:
        publisher.publish(_detected())
        wait_for("three attempts", lambda: len(attempts) >= 3, timeout=60, interval=0.2)
    finally:
        publisher.close()
        stop.set()
        thread.join(30)
    assert len(attempts) == 3


@pytest.mark.parametrize("failure", [PermanentError("bad input"), TransientError("forever")])
def test_failures_end_in_the_dead_letter_queue(vhost_url: str, failure: Exception) -> None:
    def handler(envelope: Envelope) -> Sequence[Envelope]:
        raise failure

    settings = _settings(vhost_url)
    stop, thread = _run_consumer(settings, handler)
    publisher = Publisher(settings)
    try:
        publisher.publish(_detected())
        dead = _drain(vhost_url, VALIDATOR.dead_queue, 1)
    finally:
        publisher.close()
        stop.set()
        thread.join(30)
    assert len(dead) == 1
    assert dead[0].message_id == str(_detected().message_id)


def test_undecodable_messages_are_dead_lettered(vhost_url: str) -> None:
    settings = _settings(vhost_url)
    stop, thread = _run_consumer(settings, lambda envelope: [])
    # The consumer declares the topology first; an event published before would be unroutable.
    wait_for("the topology declared", lambda: _declared(vhost_url, VALIDATOR.dead_queue), 60)
    connection = pika.BlockingConnection(pika.URLParameters(vhost_url))
    try:
        connection.channel().basic_publish("slurm-k8s.events", "file.detected", b"{not json")
    finally:
        connection.close()
    try:
        assert len(_drain(vhost_url, VALIDATOR.dead_queue, 1)) == 1
    finally:
        stop.set()
        thread.join(30)


def test_trace_context_flows_from_publisher_to_consumer(vhost_url: str) -> None:
    exporter = InMemorySpanExporter()
    configure_telemetry(TelemetrySettings(), "test", exporter=exporter)
    done = threading.Event()

    def handler(envelope: Envelope) -> Sequence[Envelope]:
        done.set()
        return []

    settings = _settings(vhost_url)
    stop, thread = _run_consumer(settings, handler)
    publisher = Publisher(settings)
    try:
        publisher.publish(_detected())
        assert done.wait(60)
    finally:
        publisher.close()
        stop.set()
        thread.join(30)
    from opentelemetry import trace

    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    produced = spans["slurm-k8s.events publish"]
    consumed = spans[f"{VALIDATOR.name} process"]
    assert consumed.context.trace_id == produced.context.trace_id
