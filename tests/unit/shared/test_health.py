import socket
from pathlib import Path

import pytest

from shared.config import BrokerSettings, NasSettings
from shared.health import problems

pytestmark = pytest.mark.unit


def closed_port() -> int:
    """A loopback port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_broker_and_no_nas_are_both_named(tmp_path: Path) -> None:
    broker = BrokerSettings(AMQP_URL=f"amqp://u:p@127.0.0.1:{closed_port()}/v")
    found = problems(broker, NasSettings(NAS_ROOT=tmp_path / "absent"))
    assert len(found) == 2
    assert found[0].startswith("NAS: ")
    assert "is not a directory" in found[0]
    assert found[1].startswith("broker: cannot connect to RabbitMQ")
