"""The one consumer adapter: decode → handle → publish follow-ups → ack, retry or dead-letter.

Handlers are pure functions of (envelope) → follow-up envelopes, with their dependencies bound
in by the service; they never see pika. This module owns the transport: a blocking pika loop
that wakes every second to check the stop event, runs the handler in a worker thread while the
connection thread keeps heartbeats flowing, publishes follow-ups with confirms *before* acking
(so a crash in between redelivers instead of losing), and applies ``policy.decide``.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
from opentelemetry.trace import SpanKind, Status, StatusCode
from pika.adapters.blocking_connection import BlockingChannel

from shared.broker.connection import CONNECTION_ERRORS, close_quietly, connect, declare_topology
from shared.broker.policy import RETRY_COUNT_HEADER, Action, Decision, decide
from shared.broker.publisher import publish_on
from shared.broker.topology import QueueSpec
from shared.config import BrokerSettings
from shared.errors import BrokerUnavailable
from shared.logs import get_logger, job_context
from shared.messages import Envelope, decode
from shared.telemetry import extract_context, meter, tracer

Handler = Callable[[Envelope], Sequence[Envelope]]
"""Takes one message, returns the events to publish once it is done (maybe none)."""

_log = get_logger(__name__)
_RECONNECT_DELAY_S = 2.0


def _wake(connection: pika.BlockingConnection) -> None:
    """Make the connection's pending ``process_data_events`` return (from any thread)."""
    with contextlib.suppress(Exception):  # closed meanwhile: the pump ends by itself
        connection.add_callback_threadsafe(lambda: None)


class Consumer:
    """Consumes one queue until the stop event is set, reconnecting when the broker goes away.

    Args:
        settings: broker address, prefetch and retry budget.
        spec: the queue to consume.
        handler: the service's pure handler.
        stop: set by SIGTERM; the message in flight is finished first.
        on_idle: called about once a second when no message arrives (periodic reconcile).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        spec: QueueSpec,
        handler: Handler,
        stop: threading.Event,
        *,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._spec = spec
        self._handler = handler
        self._stop = stop
        self._on_idle = on_idle
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=spec.name)
        m = meter()
        self._outcomes = m.create_counter(
            "slurmk8s.messages", description="Messages processed, by queue and outcome."
        )
        self._duration = m.create_histogram(
            "slurmk8s.handler.duration", unit="s", description="Handler time per message."
        )

    def run(self) -> None:
        """Consume until stopped. Broker outages are waited out, never fatal."""
        try:
            while not self._stop.is_set():
                try:
                    self._consume_until_stopped()
                except BrokerUnavailable as exc:
                    _log.warning("broker unavailable; reconnecting", error=str(exc))
                    self._stop.wait(_RECONNECT_DELAY_S)
        finally:
            self._executor.shutdown(wait=True)

    def _consume_until_stopped(self) -> None:
        connection = connect(self._settings)
        try:
            channel = connection.channel()
            declare_topology(channel)
            channel.basic_qos(prefetch_count=self._settings.prefetch)
            out = connection.channel()
            out.confirm_delivery()
            _log.info("consuming", queue=self._spec.name)
            for method, properties, body in channel.consume(
                self._spec.name, inactivity_timeout=1.0
            ):
                if self._stop.is_set():
                    break
                if method is None:
                    if self._on_idle is not None:
                        self._on_idle()
                    continue
                self._deliver(connection, channel, out, method, properties, body)
            # Unacked prefetched messages return to the queue when the channel closes.
            channel.cancel()
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"lost RabbitMQ while consuming: {exc!r}") from exc
        finally:
            close_quietly(connection)

    def _deliver(
        self,
        connection: pika.BlockingConnection,
        channel: BlockingChannel,
        out: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        headers: dict[str, Any] = dict(properties.headers or {})
        retries = int(headers.get(RETRY_COUNT_HEADER, 0))
        started = time.monotonic()
        with tracer().start_as_current_span(
            f"{self._spec.name} process",
            context=extract_context(headers),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "rabbitmq", "messaging.destination": self._spec.name},
        ) as span:
            error: BaseException | None = None
            envelope: Envelope | None = None
            try:
                envelope = decode(body)
                span.set_attribute("messaging.message.id", str(envelope.message_id))
                span.set_attribute("slurmk8s.key", envelope.body.idempotency_key)
                for follow_up in self._handle(connection, envelope):
                    publish_on(out, follow_up)
            except CONNECTION_ERRORS:
                raise  # nothing acked: the broker redelivers after we reconnect
            except Exception as exc:
                error = exc
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            decision = decide(error, retries, self._settings.max_retries)
            self._apply(decision, channel, out, method, properties, body, headers)
        outcome = decision.action.value
        self._outcomes.add(1, {"queue": self._spec.name, "outcome": outcome})
        self._duration.record(time.monotonic() - started, {"queue": self._spec.name})
        log = _log.bind(
            queue=self._spec.name,
            outcome=outcome,
            type=envelope.type if envelope else None,
            key=envelope.body.idempotency_key if envelope else None,
            job_id=envelope.job_id if envelope else None,
            attempt=decision.attempt,
        )
        if error is None:
            log.info("message processed")
        else:
            log.warning(
                "message failed",
                error=f"{type(error).__name__}: {error}",
                retry_in_s=round(decision.delay_s, 1),
            )

    def _handle(
        self, connection: pika.BlockingConnection, envelope: Envelope
    ) -> Sequence[Envelope]:
        """Run the handler in the worker thread, pumping heartbeats until it returns.

        The handler's end wakes the pump at once (``add_callback_threadsafe``): without it,
        every message waited out the rest of a 0.1 s pump slice, a floor of 0.1 s per message
        whatever the handler took (a 1,000-file burst: 100 s of waiting).
        """
        # The worker thread runs in a copy of this context: the handler's spans and log lines
        # belong to the message's trace and carry its job id.
        with job_context(envelope.job_id):
            context = contextvars.copy_context()
        future = self._executor.submit(context.run, self._handler, envelope)
        future.add_done_callback(lambda _: _wake(connection))
        while not future.done():
            connection.process_data_events(time_limit=0.1)
        return future.result()

    def _apply(
        self,
        decision: Decision,
        channel: BlockingChannel,
        out: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
        headers: dict[str, Any],
    ) -> None:
        tag = method.delivery_tag
        if decision.action is Action.ACK:
            channel.basic_ack(tag)
        elif decision.action is Action.RETRY:
            # The copy waits in the retry queue until it expires back into the work queue;
            # the original is acked only once the broker has confirmed the copy.
            out.basic_publish(
                exchange="",
                routing_key=self._spec.retry_queue,
                body=body,
                properties=pika.BasicProperties(
                    content_type=properties.content_type,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=properties.message_id,
                    type=properties.type,
                    headers={**headers, RETRY_COUNT_HEADER: decision.attempt},
                    expiration=str(max(1, int(decision.delay_s * 1000))),
                ),
            )
            channel.basic_ack(tag)
        else:
            channel.basic_nack(tag, requeue=False)
