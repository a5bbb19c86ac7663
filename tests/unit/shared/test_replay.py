"""slurmk8s replay: a dry run changes nothing; --yes requeues with the failure history cleared."""

import argparse
import io
from types import SimpleNamespace
from typing import Any

import pika
import pika.exceptions
import pytest

from shared.broker import ALL_QUEUES, VALIDATOR
from shared.broker.policy import DEAD_REASON_HEADER, RETRY_COUNT_HEADER
from shared.cli import build_parser
from shared.messages import Envelope, FileDetected, encode
from shared.replay import fresh_headers, replay_queue, service_of

pytestmark = pytest.mark.unit


class Channel:
    """basic_get from a list; records publishes and acks; ``full`` nacks every publish."""

    def __init__(self, bodies: list[tuple[dict[str, Any], bytes]], *, full: bool = False) -> None:
        self.queue = list(bodies)
        self.full = full
        self.published: list[dict[str, Any]] = []
        self.acks: list[int] = []

    def basic_get(self, queue: str, auto_ack: bool) -> tuple[Any, Any, Any]:
        assert queue == VALIDATOR.dead_queue
        assert auto_ack is False
        if not self.queue:
            return None, None, None
        headers, body = self.queue.pop(0)
        props = pika.BasicProperties(
            content_type="application/json", message_id="m", type="file.detected", headers=headers
        )
        return SimpleNamespace(delivery_tag=len(self.queue) + 1), props, body

    def basic_publish(self, **kwargs: Any) -> None:
        if self.full:
            raise pika.exceptions.NackError([])
        self.published.append(kwargs)

    def basic_ack(self, tag: int) -> None:
        self.acks.append(tag)


def _dead(n: int) -> list[tuple[dict[str, Any], bytes]]:
    return [
        (
            {
                DEAD_REASON_HEADER: "still failing after 40 retries",
                RETRY_COUNT_HEADER: 41,
                "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
            },
            encode(
                Envelope.wrap(
                    FileDetected(
                        path=f"/s/{i}.sh", size=1, mtime_ns=1, sha256="0" * 64, owner_uid=2001
                    )
                )
            ),
        )
        for i in range(n)
    ]


def test_a_dry_run_lists_and_changes_nothing() -> None:
    channel, out = Channel(_dead(3)), io.StringIO()
    seen, refused = replay_queue(channel, VALIDATOR, apply=False, limit=10, out=out)
    assert (seen, refused) == (3, False)
    assert channel.published == []
    assert channel.acks == []  # the messages return to the dead queue when the channel closes
    assert out.getvalue().count("still failing after 40 retries") == 3


def test_yes_requeues_each_to_its_work_queue_with_a_clean_history() -> None:
    channel = Channel(_dead(2))
    seen, _ = replay_queue(channel, VALIDATOR, apply=True, limit=10, out=io.StringIO())
    assert seen == 2
    assert [p["routing_key"] for p in channel.published] == [VALIDATOR.name] * 2
    headers = channel.published[0]["properties"].headers
    assert RETRY_COUNT_HEADER not in headers
    assert DEAD_REASON_HEADER not in headers
    assert "traceparent" in headers  # the job's trace continues
    assert len(channel.acks) == 2


def test_a_full_work_queue_stops_the_replay_and_keeps_the_rest_dead() -> None:
    channel = Channel(_dead(2), full=True)
    seen, refused = replay_queue(channel, VALIDATOR, apply=True, limit=10, out=io.StringIO())
    assert (seen, refused) == (0, True)
    assert channel.acks == []


def test_the_limit_is_respected() -> None:
    channel = Channel(_dead(5))
    seen, _ = replay_queue(channel, VALIDATOR, apply=False, limit=2, out=io.StringIO())
    assert seen == 2


def test_the_cli_is_a_dry_run_unless_told_and_knows_every_queue() -> None:
    args: argparse.Namespace = build_parser().parse_args(["replay"])
    assert args.yes is False
    assert build_parser().parse_args(["replay", "--yes"]).yes is True
    for spec in ALL_QUEUES:
        build_parser().parse_args(["replay", "--queue", service_of(spec)])


def test_fresh_headers_drop_the_brokers_death_records() -> None:
    assert fresh_headers({"x-death": [{}], "x-first-death-reason": "rejected", "a": 1}) == {"a": 1}
    assert fresh_headers(None) == {}
