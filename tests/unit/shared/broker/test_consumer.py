"""The consumer's pump: the handler's end wakes the connection instead of a slice running out."""

import threading
from typing import Any

import pytest

from shared.broker import VALIDATOR, Consumer
from shared.config import BrokerSettings
from shared.messages import Envelope, FileDetected

pytestmark = pytest.mark.unit


class Connection:
    """A BlockingConnection stand-in: ``process_data_events`` waits until woken or timed out."""

    def __init__(self) -> None:
        self.woken = threading.Event()
        self.wakes = 0
        self.slices: list[bool] = []

    def process_data_events(self, time_limit: float) -> None:
        self.slices.append(self.woken.wait(timeout=time_limit * 50))  # long: a wake must end it
        self.woken.clear()

    def add_callback_threadsafe(self, callback: Any) -> None:
        self.wakes += 1
        callback()
        self.woken.set()


def test_the_handlers_end_wakes_the_pump() -> None:
    done = threading.Event()

    def handler(envelope: Envelope) -> list[Envelope]:
        done.wait(timeout=5)
        return [envelope]

    consumer = Consumer(
        BrokerSettings(AMQP_URL="amqp://x:y@127.0.0.1:1/v"), VALIDATOR, handler, threading.Event()
    )
    envelope = Envelope.wrap(
        FileDetected(path="/s/a.sh", size=1, mtime_ns=1, sha256="0" * 64, owner_uid=2001)
    )
    connection = Connection()
    threading.Timer(0.05, done.set).start()
    try:
        out = consumer._handle(connection, envelope)  # type: ignore[arg-type]
    finally:
        consumer._executor.shutdown()
    assert out == [envelope]
    assert connection.wakes == 1
    assert connection.slices[-1] is True  # the last slice ended by the wake, not its limit
