"""The publisher keeps its idle connection alive; a lost one is dropped, made again later."""

from typing import Any

import pika.exceptions
import pytest

from shared.broker.publisher import Publisher
from shared.config import BrokerSettings

pytestmark = pytest.mark.unit


class Connection:
    def __init__(self, error: Exception | None = None) -> None:
        self.pumped: list[float] = []
        self.error = error
        self.closed = False
        self.is_open = True

    def process_data_events(self, time_limit: float) -> None:
        self.pumped.append(time_limit)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.closed = True
        self.is_open = False


def _publisher(connection: Any) -> Publisher:
    publisher = Publisher(BrokerSettings(AMQP_URL="amqp://x:y@127.0.0.1:1/v"))
    publisher._connection = connection
    return publisher


def test_keepalive_pumps_the_idle_connection_without_blocking() -> None:
    connection = Connection()
    _publisher(connection).keepalive()
    assert connection.pumped == [0]


def test_keepalive_drops_a_connection_the_broker_closed() -> None:
    connection = Connection(pika.exceptions.StreamLostError("gone"))
    publisher = _publisher(connection)
    publisher.keepalive()
    assert publisher._connection is None


def test_keepalive_without_a_connection_does_nothing() -> None:
    _publisher(None).keepalive()
