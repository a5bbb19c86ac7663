import json
from datetime import UTC, datetime

import pytest

from shared.errors import DecodeError
from shared.messages import Envelope, FileDetected, JobStarted, decode, encode

pytestmark = pytest.mark.unit

STARTED = JobStarted(job_id=7, restart_count=1, node="n1", user="alice", uid=2001, gid=2001)


def test_round_trip_keeps_every_field() -> None:
    envelope = Envelope.wrap(STARTED, occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert decode(encode(envelope)) == envelope
    assert envelope.type == "job.started"


def test_same_fact_gets_the_same_message_id() -> None:
    # Duplicates (a prolog run twice, a republish after reconnect) must be recognisable.
    assert Envelope.wrap(STARTED).message_id == Envelope.wrap(STARTED).message_id
    requeued = STARTED.model_copy(update={"restart_count": 2})
    assert Envelope.wrap(requeued).message_id != Envelope.wrap(STARTED).message_id


def test_unknown_fields_are_rejected() -> None:
    data = json.loads(encode(Envelope.wrap(STARTED)))
    data["body"]["surprise"] = 1
    with pytest.raises(DecodeError):
        decode(json.dumps(data).encode())


def test_unknown_schema_version_is_rejected() -> None:
    data = json.loads(encode(Envelope.wrap(STARTED)))
    data["schema_version"] = 2
    with pytest.raises(DecodeError):
        decode(json.dumps(data).encode())


def test_unknown_type_and_garbage_are_rejected() -> None:
    data = json.loads(encode(Envelope.wrap(STARTED)))
    data["body"]["type"] = "job.exploded"
    for raw in (json.dumps(data).encode(), b"not json", b""):
        with pytest.raises(DecodeError):
            decode(raw)


def test_bodies_are_frozen() -> None:
    with pytest.raises(ValueError, match="frozen"):
        STARTED.job_id = 8  # type: ignore[misc]


def test_file_detected_key_is_path_and_content() -> None:
    body = FileDetected(
        path="/nas/submit/a.sh", size=3, mtime_ns=1, sha256="0" * 64, owner_uid=2001
    )
    assert body.idempotency_key == "/nas/submit/a.sh:" + "0" * 64
