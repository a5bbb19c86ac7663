"""The lab's RabbitMQ: persistent messages in quorum queues survive a broker restart, the
service user works on its vhost, guest is gone and the management UI answers to labadmin.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

pytestmark = pytest.mark.integration

LAB = Path(__file__).resolve().parents[3] / "lab"


def _connect(url: str, timeout: float = 60) -> pika.BlockingConnection:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pika.BlockingConnection(pika.URLParameters(url))
        except pika.exceptions.AMQPConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _restart_broker() -> None:
    for script in ("down.sh", "up.sh"):
        subprocess.run(
            ["bash", str(LAB / "rabbitmq" / script)],
            check=True,
            timeout=240,
            capture_output=True,
        )


def test_persistent_message_in_quorum_queue_survives_restart(amqp_url: str) -> None:
    queue = f"labtest-{uuid.uuid4().hex[:8]}"
    body = uuid.uuid4().bytes
    conn = _connect(amqp_url)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        # With confirms on, basic_publish raises unless the broker took the message.
        ch.basic_publish(
            "",
            queue,
            body,
            pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
            mandatory=True,
        )
    finally:
        conn.close()

    _restart_broker()

    conn = _connect(amqp_url)
    try:
        ch = conn.channel()
        got: Any = (None, None, None)
        # A quorum queue needs a moment after boot to elect its (only) leader.
        deadline = time.monotonic() + 30
        while got[0] is None and time.monotonic() < deadline:
            try:
                got = ch.basic_get(queue, auto_ack=False)
            except pika.exceptions.ChannelClosedByBroker:
                ch = conn.channel()
            if got[0] is None:
                time.sleep(0.5)
        method, _, received = got
        assert method is not None, "the message did not survive the restart"
        assert received == body
        ch.basic_ack(method.delivery_tag)
        ch.queue_delete(queue)
    finally:
        conn.close()


def _api(base: str, path: str, user: str, password: str) -> tuple[int, Any]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req = urllib.request.Request(f"{base}/api{path}", headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, None


def test_management_ui_answers_labadmin_and_guest_is_gone(
    amqp_url: str, rabbitmq_admin: tuple[str, str], lab_env: dict[str, str]
) -> None:
    base = lab_env.get("RABBITMQ_MGMT_URL", "http://127.0.0.1:15672")
    status, users = _api(base, "/users", *rabbitmq_admin)
    assert status == 200
    by_name = {u["name"]: u for u in users}
    assert "guest" not in by_name
    assert "administrator" in by_name[rabbitmq_admin[0]]["tags"]
    assert by_name["slurmk8s"]["tags"] in ([], "")
    assert _api(base, "/whoami", "guest", "guest")[0] == 401

    status, perms = _api(base, "/permissions/slurm-k8s/slurmk8s", *rabbitmq_admin)
    assert status == 200
    assert (perms["configure"], perms["write"], perms["read"]) == (".*", ".*", ".*")

    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F"))


def test_broker_listens_on_loopback_only(amqp_url: str) -> None:
    listeners = subprocess.run(
        ["ss", "-Hltn"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    for port in (":5672", ":15672", ":25672", ":4369"):
        addrs = [
            line.split()[3] for line in listeners.splitlines() if line.split()[3].endswith(port)
        ]
        assert addrs, f"nothing listens on {port}"
        assert all(a.startswith(("127.0.0.1", "[::1]")) for a in addrs), addrs
