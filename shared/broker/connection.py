"""Connecting to RabbitMQ and declaring the topology; pika's errors stop here.

Every pika exception that means "the broker is not there right now" becomes
``BrokerUnavailable``, so nothing above this package imports pika.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from tenacity import (
    before_sleep_log,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.broker import topology
from shared.config import BrokerSettings
from shared.errors import BrokerUnavailable

_log = logging.getLogger(__name__)
_PRECONDITION_FAILED = 406

# Exceptions that mean the connection or channel is gone, not that our request was wrong.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,
    pika.exceptions.AMQPChannelError,
    pika.exceptions.StreamLostError,
    ConnectionError,
    OSError,
)


def connect(settings: BrokerSettings) -> pika.BlockingConnection:
    """Open a connection, retrying with exponential backoff (a broker restart takes seconds).

    Raises:
        BrokerUnavailable: the broker stayed unreachable for ``connect_attempts`` tries.
    """

    @retry(
        retry=retry_if_exception_type(BrokerUnavailable),
        wait=wait_exponential_jitter(initial=0.5, max=10),
        stop=stop_after_attempt(settings.connect_attempts),
        before_sleep=before_sleep_log(_log, logging.WARNING),
        reraise=True,
    )
    def _attempt() -> pika.BlockingConnection:
        params = pika.URLParameters(settings.amqp_url)
        params.heartbeat = settings.heartbeat_s
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": "slurm-k8s"}
        try:
            return pika.BlockingConnection(params)
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc!r}") from exc

    return _attempt()


def declare_topology(channel: BlockingChannel) -> None:
    """Declare exchanges and every service's queues (idempotent; same arguments each time)."""
    channel.exchange_declare(topology.EVENTS_EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(topology.DEAD_LETTER_EXCHANGE, exchange_type="topic", durable=True)
    channel.queue_declare(
        topology.JOURNAL_QUEUE, durable=True, arguments=topology.journal_arguments()
    )
    channel.queue_bind(topology.JOURNAL_QUEUE, topology.EVENTS_EXCHANGE, routing_key="#")
    for spec in topology.ALL_QUEUES:
        _declare_queue(channel, spec.name, topology.work_queue_arguments(spec))
        for key in spec.routing_keys:
            channel.queue_bind(spec.name, topology.EVENTS_EXCHANGE, routing_key=key)
        _declare_queue(channel, spec.retry_queue, topology.retry_queue_arguments(spec))
        _declare_queue(channel, spec.dead_queue, topology.dead_queue_arguments())
        channel.queue_bind(spec.dead_queue, topology.DEAD_LETTER_EXCHANGE, routing_key=spec.name)


def _declare_queue(channel: BlockingChannel, name: str, arguments: dict[str, Any]) -> None:
    """Declare a queue; one declared earlier with other arguments is used as it is.

    RabbitMQ refuses (406) a declaration whose arguments differ from the existing queue's, and
    a queue's arguments cannot change in place: a deployment from before the length limits
    keeps working, unbounded, and says so. The refusal closes the channel it was made on, so
    the attempt uses a channel of its own.
    """
    probe = channel.connection.channel()
    try:
        probe.queue_declare(name, durable=True, arguments=arguments)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != _PRECONDITION_FAILED:
            raise
        _log.warning(
            "queue %s exists with other arguments (%s); it is used as declared, its bounds "
            "coming from a policy if one is set (docs/reliability.md)",
            name,
            exc.reply_text,
        )
        return
    probe.close()


def copy_properties(
    properties: pika.BasicProperties, headers: dict[str, Any], expiration: str | None = None
) -> pika.BasicProperties:
    """A persistent copy's properties: the original's type and ids, the given headers.

    Retries, dead letters and replays re-publish a delivered message; each copy must survive a
    broker restart and keep what identifies it (message id, type), whatever else changes.
    """
    return pika.BasicProperties(
        content_type=properties.content_type,
        delivery_mode=pika.DeliveryMode.Persistent,
        message_id=properties.message_id,
        type=properties.type,
        headers=headers,
        expiration=expiration,
    )


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close a connection that may already be broken; closing is best effort by nature."""
    if connection is not None and connection.is_open:
        with contextlib.suppress(*CONNECTION_ERRORS):
            connection.close()
