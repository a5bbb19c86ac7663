"""Publishing envelopes with publisher confirms: a publish returns only once the broker has it.

Messages are persistent and ``mandatory``; the trace context travels in the headers. A lost
connection is re-opened and the publish retried, which can duplicate a message: consumers are
idempotent on the envelope's ``message_id`` (derived from the body's idempotency key).
"""

from __future__ import annotations

import logging
from typing import Any

import pika
import pika.exceptions
from opentelemetry.trace import SpanKind
from pika.adapters.blocking_connection import BlockingChannel
from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.broker import topology
from shared.broker.connection import CONNECTION_ERRORS, close_quietly, connect, declare_topology
from shared.config import BrokerSettings
from shared.errors import BrokerUnavailable, PublishRejected
from shared.messages import Envelope, encode
from shared.telemetry import inject_context, tracer

_log = logging.getLogger(__name__)


def properties_for(envelope: Envelope, headers: dict[str, Any] | None = None) -> Any:
    """AMQP properties of a persistent JSON message carrying the current trace context."""
    merged: dict[str, Any] = dict(headers or {})
    inject_context(merged)
    return pika.BasicProperties(
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=str(envelope.message_id),
        type=envelope.type,
        headers=merged,
    )


def publish_on(channel: BlockingChannel, envelope: Envelope) -> None:
    """Publish on a channel that is already in confirm mode.

    Raises:
        PublishRejected: the broker nacked it or could not route it.
    """
    with tracer().start_as_current_span(
        f"{topology.EVENTS_EXCHANGE} publish",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.message.id": str(envelope.message_id),
            "messaging.rabbitmq.destination.routing_key": envelope.type,
        },
    ):
        try:
            channel.basic_publish(
                exchange=topology.EVENTS_EXCHANGE,
                routing_key=envelope.type,
                body=encode(envelope),
                properties=properties_for(envelope),
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            raise PublishRejected(f"broker refused {envelope.type}: {exc!r}") from exc


class Publisher:
    """A confirmed publisher on its own connection, for processes that only publish."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        # Made once: a retry policy built per publish cost 30 us of each (the watcher's
        # publishes are one a file).
        self._publish_with_retries = retry(
            retry=retry_if_exception_type(BrokerUnavailable),
            wait=wait_exponential_jitter(initial=0.2, max=5),
            stop=stop_after_attempt(5),
            before_sleep=before_sleep_log(_log, logging.WARNING),
            reraise=True,
        )(self._attempt)

    def publish(self, envelope: Envelope) -> None:
        """Publish and wait for the broker's confirm, reconnecting on connection loss.

        Raises:
            BrokerUnavailable: the broker stayed unreachable.
            PublishRejected: the broker refused the message.
        """
        self._publish_with_retries(envelope)

    def _attempt(self, envelope: Envelope) -> None:
        channel = self._open()
        try:
            publish_on(channel, envelope)
        except CONNECTION_ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"lost RabbitMQ while publishing: {exc!r}") from exc

    def _open(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = connect(self._settings)
            channel = self._connection.channel()
            declare_topology(channel)
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def keepalive(self) -> None:
        """Service the idle connection (heartbeats), from the thread that publishes.

        A BlockingConnection only answers heartbeats while it is pumped; a publisher that is
        quiet for a few minutes had its connection closed by the broker, and the next publish
        paid a failed attempt, a backoff and a reconnect (0.7-1.1 s for the first file after
        idle minutes). Cheap: returns at once when nothing is due. A lost connection is
        dropped here and made again on the next publish.
        """
        connection = self._connection
        if connection is None:
            return
        try:
            connection.process_data_events(time_limit=0)
        except CONNECTION_ERRORS:
            self.close()

    def close(self) -> None:
        """Close the connection if open; safe to call twice."""
        connection, self._connection, self._channel = self._connection, None, None
        close_quietly(connection)
