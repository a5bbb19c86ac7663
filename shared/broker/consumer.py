"""The one consumer adapter: decode → handle → publish follow-ups → ack, retry or dead-letter.

Handlers are pure functions of (envelope) → follow-up envelopes, with their dependencies bound
in by the service; they never see pika. This module owns the transport: a blocking pika loop
that wakes every second to check the stop event, runs the handler in a worker thread while the
connection thread keeps heartbeats flowing, publishes follow-ups with confirms *before* acking
(so a crash in between redelivers instead of losing), and applies ``policy.decide``.

Only the transport's own failures (the pump, a publish, an ack) mean "the broker is gone" and
reconnect; whatever the handler raises, an ``OSError`` included, is the handler's failure and
follows the ack policy. A handler that runs past its budget is a transient failure: the message
is retried and the worker thread left behind (see ``_run``). A message is dead-lettered by
this adapter, never silently by the broker: with a reason in a header and a log line, after
the service's ``on_dead_letter`` answer (e.g. the validator's ``.error`` file).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import pika
import pika.exceptions
from opentelemetry.trace import SpanKind, Status, StatusCode
from pika.adapters.blocking_connection import BlockingChannel

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
    Action,
    Decision,
    backoff_s,
    decide,
    poison,
)
from shared.broker.publisher import publish_on
from shared.broker.topology import DEAD_LETTER_EXCHANGE, DELIVERY_LIMIT, QueueSpec
from shared.config import BrokerSettings
from shared.errors import BrokerUnavailable, TransientError
from shared.logs import get_logger, job_context
from shared.messages import Envelope, decode
from shared.telemetry import extract_context, meter, tracer

Handler = Callable[[Envelope], Sequence[Envelope]]
"""Takes one message, returns the events to publish once it is done (maybe none)."""
DeadLetterAnswer = Callable[[Envelope, str], None]
"""Told about a message being dead-lettered (and why) before it is, to answer its owner."""

_log = get_logger(__name__)
_RECONNECT_DELAY_S = 2.0
_T = TypeVar("_T")


class HandlerOverBudget(TransientError):
    """The handler did not return within the consumer's time budget."""


class _TransportLost(Exception):
    """The broker connection failed under the adapter itself (not inside the handler)."""


_TRANSPORT_FAILURES: tuple[type[BaseException], ...] = (_TransportLost, *CONNECTION_ERRORS)


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
        on_dead_letter: answers for a message about to be dead-lettered (best effort).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        spec: QueueSpec,
        handler: Handler,
        stop: threading.Event,
        *,
        on_idle: Callable[[], None] | None = None,
        on_dead_letter: DeadLetterAnswer | None = None,
    ) -> None:
        self._settings = settings
        self._spec = spec
        self._handler = handler
        self._stop = stop
        self._on_idle = on_idle
        self._on_dead_letter = on_dead_letter
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
                    self._idle()
                    continue
                self._deliver(connection, channel, out, method, properties, body)
            # Unacked prefetched messages return to the queue when the channel closes.
            channel.cancel()
        except _TRANSPORT_FAILURES as exc:
            cause = exc.__cause__ if isinstance(exc, _TransportLost) else exc
            raise BrokerUnavailable(f"lost RabbitMQ while consuming: {cause!r}") from exc
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
            decision = poison(int(headers.get(DELIVERY_COUNT_HEADER, 0)), DELIVERY_LIMIT)
            try:
                envelope = decode(body)
                span.set_attribute("messaging.message.id", str(envelope.message_id))
                span.set_attribute("slurmk8s.key", envelope.body.idempotency_key)
                if decision is None:
                    for follow_up in self._handle(connection, envelope):
                        self._transport(publish_on, out, follow_up)
            except _TransportLost:
                raise  # nothing acked: the broker redelivers after we reconnect
            except Exception as exc:  # the handler's (or the message's) failure, whatever it is
                error = exc
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
            if decision is None:
                decision = decide(error, retries, self._settings.max_retries)
            if decision.action is Action.DEAD_LETTER:
                self._answer(connection, envelope, decision.reason)
            try:
                self._transport(
                    self._apply, decision, channel, out, method, properties, body, headers
                )
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
                # The retry (or dead-letter fallback) queue is full: the message goes back to
                # its work queue and the consumer pauses, rather than losing it.
                _log.error("broker refused the retry copy; message requeued", error=repr(exc))
                self._transport(channel.basic_nack, method.delivery_tag, requeue=True)
                self._stop.wait(1.0)
        outcome = decision.action.value
        traced = span.get_span_context()
        self._outcomes.add(1, {"queue": self._spec.name, "outcome": outcome})
        self._duration.record(time.monotonic() - started, {"queue": self._spec.name})
        log = _log.bind(
            queue=self._spec.name,
            outcome=outcome,
            type=envelope.type if envelope else None,
            key=envelope.body.idempotency_key if envelope else None,
            job_id=envelope.job_id if envelope else None,
            attempt=decision.attempt,
            # Logged after the span ended: its trace is named here so the line joins it.
            trace_id=format(traced.trace_id, "032x") if traced.is_valid else None,
        )
        if decision.action is Action.DEAD_LETTER:
            log.error("message dead-lettered", reason=decision.reason)
        elif error is None:
            log.info("message processed")
        else:
            log.warning(
                "message failed",
                error=f"{type(error).__name__}: {error}",
                retry_in_s=round(decision.delay_s, 1),
            )

    def _idle(self) -> None:
        """The idle hook; its failure is logged, never taken for a lost connection."""
        if self._on_idle is None:
            return
        try:
            self._on_idle()
        except Exception as exc:
            _log.error("idle task failed", queue=self._spec.name, error=repr(exc))

    def _handle(
        self, connection: pika.BlockingConnection, envelope: Envelope
    ) -> Sequence[Envelope]:
        """The handler's follow-ups; raises what the handler raised, or ``HandlerOverBudget``."""
        return self._run(connection, envelope, self._handler, envelope)

    def _answer(
        self, connection: pika.BlockingConnection, envelope: Envelope | None, reason: str
    ) -> None:
        """Let the service answer for a message it is giving up on; failing that, log it."""
        if self._on_dead_letter is None or envelope is None:
            return
        try:
            self._run(connection, envelope, self._on_dead_letter, envelope, reason)
        except _TransportLost:
            raise
        except Exception as exc:
            _log.error(
                "dead-letter answer failed",
                queue=self._spec.name,
                key=envelope.body.idempotency_key,
                error=f"{type(exc).__name__}: {exc}",
            )

    def _run(
        self,
        connection: pika.BlockingConnection,
        envelope: Envelope,
        fn: Callable[..., _T],
        *args: Any,
    ) -> _T:
        """Run ``fn`` in the worker thread, pumping heartbeats until it returns or its budget ends.

        The end of ``fn`` wakes the pump at once (``add_callback_threadsafe``): without it,
        every message waited out the rest of a 0.1 s pump slice, a floor of 0.1 s per message
        whatever the handler took (a 1,000-file burst: 100 s of waiting).

        Past ``handler_budget_s`` the thread cannot be stopped, so it is left to finish on its
        own and a new worker takes the next message; the message is retried. Nothing it does
        is unaccounted: its follow-ups are discarded (never published, never acked for), and
        every handler is idempotent on the message's key and records its side effects before
        it makes them (the validator's journal and key lock, the launcher's and collector's
        deterministic object names), so the retry finds what the stray thread did, or is held
        off by its lock, and publishes the outcome itself.

        Raises:
            _TransportLost: the broker connection failed while pumping.
            HandlerOverBudget: ``fn`` did not return in time.
        """
        # The worker thread runs in a copy of this context: the handler's spans and log lines
        # belong to the message's trace and carry its job id.
        with job_context(envelope.job_id):
            context = contextvars.copy_context()
        future: Future[_T] = self._executor.submit(context.run, fn, *args)
        future.add_done_callback(lambda _: _wake(connection))
        deadline = time.monotonic() + self._settings.handler_budget_s
        while not future.done():
            if time.monotonic() >= deadline:
                self._executor.shutdown(wait=False)
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=self._spec.name
                )
                raise HandlerOverBudget(
                    f"no answer within {self._settings.handler_budget_s:g} s; retried, "
                    "the late worker's result will be discarded"
                )
            self._transport(connection.process_data_events, time_limit=0.1)
        return future.result()

    @staticmethod
    def _transport(call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """A call on the broker connection: its connection errors become ``_TransportLost``."""
        try:
            return call(*args, **kwargs)
        except CONNECTION_ERRORS as exc:
            raise _TransportLost from exc

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
                properties=copy_properties(
                    properties,
                    {**headers, RETRY_COUNT_HEADER: decision.attempt},
                    expiration=str(max(1, int(decision.delay_s * 1000))),
                ),
            )
            channel.basic_ack(tag)
        else:
            self._dead_letter(decision, channel, out, method, properties, body, headers)

    def _dead_letter(
        self,
        decision: Decision,
        channel: BlockingChannel,
        out: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
        headers: dict[str, Any],
    ) -> None:
        """Copy the message into the dead-letter queue with its reason, then ack the original.

        A full dead-letter queue (``x-overflow: reject-publish``) nacks the copy: the message
        then waits in the retry queue for the longest backoff and comes back, rather than being
        lost; the log says so each time.
        """
        tag = method.delivery_tag
        dead_headers = {
            **headers,
            DEAD_REASON_HEADER: decision.reason,
            DEAD_AT_HEADER: datetime.now(UTC).isoformat(timespec="seconds"),
        }
        try:
            out.basic_publish(
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=self._spec.name,
                body=body,
                properties=copy_properties(properties, dead_headers),
                mandatory=True,
            )
        except (pika.exceptions.NackError, pika.exceptions.UnroutableError) as exc:
            _log.error(
                "dead-letter queue refused the message; kept in the retry queue",
                queue=self._spec.dead_queue,
                error=repr(exc),
            )
            delay = backoff_s(99)
            out.basic_publish(
                exchange="",
                routing_key=self._spec.retry_queue,
                body=body,
                properties=pika.BasicProperties(
                    content_type=properties.content_type,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=properties.message_id,
                    type=properties.type,
                    headers=headers,
                    expiration=str(int(delay * 1000)),
                ),
            )
        channel.basic_ack(tag)
