"""Publishing spooled events to RabbitMQ with confirms, on a short leash.

This is the one place outside ``shared.broker`` that imports pika, on purpose: ``shared.broker``
brings tenacity and OpenTelemetry along (about 0.2 s of imports) and retries for minutes, while
a prolog must be done in well under a second. The wire format is the same: the spooled bytes
are the encoded envelope, published persistent and ``mandatory`` to the events exchange with
the envelope's ``message_id`` and type, and waited on until the broker confirms.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Protocol

import pika
import pika.exceptions

from shared.errors import BrokerUnavailable, DecodeError, PublishRejected

# Mirrors shared.broker.topology.EVENTS_EXCHANGE (a unit test keeps them equal); importing
# that module would import the whole broker package.
EVENTS_EXCHANGE = "slurm-k8s.events"


class Sender(Protocol):
    """Sends one encoded envelope and returns only once the broker has confirmed it."""

    def send(
        self, routing_key: str, message_id: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """Publish with a confirm; ``headers`` are the AMQP headers (the job's trace context).

        Raises:
            BrokerUnavailable: no connection, or it broke.
            PublishRejected: the broker nacked or returned the message.
        """

    def close(self) -> None:
        """Release the connection, if any."""


def routing_of(data: bytes) -> tuple[str, str]:
    """The (type, message_id) of an encoded envelope, without building the pydantic model.

    Raises:
        DecodeError: the bytes are not an envelope.
    """
    try:
        doc = json.loads(data)
        return str(doc["body"]["type"]), str(doc["message_id"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"spooled file is not an envelope: {exc!r}") from exc


class DeadlineExpired(Exception):
    """The send's time budget ran out (raised by the alarm, out of pika's wait)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise ``DeadlineExpired`` in the block after ``seconds`` (SIGALRM; main thread only).

    pika's blocking publish waits for the broker's confirm without any limit of its own: a
    broker that accepted the connection and then stopped answering (paused, overloaded,
    half-open TCP) would hold the hook until slurmd's or ``timeout``'s kill, and the event's
    fate would be unknown. The hook is a one-shot, single-threaded process, so an interval
    timer is the one way to bound the wait from outside pika. In another thread (tests) the
    block runs unbounded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(_signum: int, _frame: object) -> None:
        raise DeadlineExpired

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class AmqpSender:
    """A confirmed publisher with one connection attempt and tight socket timeouts.

    Args:
        amqp_url: the broker.
        timeout_s: budget for the TCP connect and for the AMQP handshake each.
        confirm_timeout_s: budget of a whole send, connection and confirm included (default
            three times ``timeout_s``: 3 s for the prolog, within its ``timeout 5``). Past it
            the event stays spooled for the flusher.
        name: the connection's name in the RabbitMQ UI.
    """

    def __init__(
        self,
        amqp_url: str,
        timeout_s: float,
        confirm_timeout_s: float | None = None,
        name: str = "slurm-k8s-hook",
    ) -> None:
        self._url = amqp_url
        self._timeout_s = timeout_s
        self._confirm_timeout_s = confirm_timeout_s or timeout_s * 3
        self._name = name
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None

    def send(
        self, routing_key: str, message_id: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        """Publish one event and wait for its confirm (see ``Sender.send``)."""
        try:
            with deadline(self._confirm_timeout_s):
                self._publish(routing_key, message_id, body, headers)
        except DeadlineExpired as exc:
            self._drop()
            raise BrokerUnavailable(
                f"no confirm for {routing_key} within {self._confirm_timeout_s:g} s"
            ) from exc

    def _publish(
        self, routing_key: str, message_id: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        try:
            channel = self._open()
            channel.basic_publish(
                exchange=EVENTS_EXCHANGE,
                routing_key=routing_key,
                body=body,
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=message_id,
                    type=routing_key,
                    headers=dict(headers),
                ),
                mandatory=True,
            )
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            raise PublishRejected(f"broker refused {routing_key}: {exc!r}") from exc
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise BrokerUnavailable(f"cannot publish {routing_key}: {exc!r}") from exc

    def _open(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            params = pika.URLParameters(self._url)
            params.connection_attempts = 1
            params.retry_delay = 0
            params.socket_timeout = self._timeout_s
            params.stack_timeout = self._timeout_s * 2
            # A broker under a memory alarm blocks publishers; the spool is the better wait.
            params.blocked_connection_timeout = self._timeout_s * 2
            # Heartbeats let the broker drop a hook's connection that died half-open; the
            # send itself is bounded by ``deadline``, not by them.
            params.heartbeat = 30
            params.client_properties = {"connection_name": self._name}
            self._connection = pika.BlockingConnection(params)
            channel = self._connection.channel()
            channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def idle(self) -> None:
        """Between sends of a long-lived sender: answer the broker's heartbeats.

        A blocking connection that nobody services is dropped by the broker after two missed
        heartbeats; the next event would then pay a failed send and a retry. A connection
        that broke here is closed; the next send opens a new one.
        """
        if self._connection is None or not self._connection.is_open:
            return
        try:
            with deadline(self._confirm_timeout_s):
                self._connection.process_data_events(time_limit=0)
        except DeadlineExpired:
            self._drop()
        except (pika.exceptions.AMQPError, OSError):
            self.close()

    def _drop(self) -> None:
        """Forget a connection interrupted mid-frame: a polite close could block again.

        Its socket is closed when the object is collected (or the process exits).
        """
        self._connection, self._channel = None, None

    def close(self) -> None:
        """Close quietly: the connection may already be broken."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()
