import json
import os
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest

from services.hooks.__main__ import EXIT_UNSPOOLED, main
from services.hooks.events import build_event, trace_headers
from services.hooks.flushing import flush_once, flush_until_empty
from services.hooks.hooklog import HookLog
from services.hooks.publishing import DeadlineExpired, deadline
from services.hooks.spool import FLUSH_LOCK, Spool, file_name
from shared.errors import BrokerUnavailable, PublishRejected
from shared.messages import decode

pytestmark = pytest.mark.unit

ENV = {
    "SLURM_JOB_ID": "42",
    "SLURM_JOB_UID": "2001",
    "SLURM_JOB_GID": "2000",
    "SLURM_JOB_USER": "alice",
    "SLURMD_NODENAME": "node1",
    "SLURM_JOB_RESTART_COUNT": "0",
}


class FakeSender:
    """Records confirmed sends; fails from the n-th send on when told to."""

    def __init__(self, fail_at: int | None = None, error: Exception | None = None) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_at = fail_at
        self.error = error or BrokerUnavailable("down")
        self.closed = 0

    def send(
        self, routing_key: str, message_id: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        if self.fail_at is not None and len(self.sent) >= self.fail_at:
            raise self.error
        self.sent.append((routing_key, message_id, body))
        self.headers.append(dict(headers))

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "outbox")


@pytest.fixture
def log(tmp_path: Path) -> HookLog:
    return HookLog(tmp_path / "hooks.log", "test")


def test_spooled_file_is_named_by_type_and_run_and_holds_the_envelope(spool: Spool) -> None:
    envelope = build_event("prolog", ENV)
    path = spool.put(envelope)
    assert path.name == "job.started.42-r0.json" == file_name(envelope)
    assert path.read_bytes() == envelope.data
    assert str(decode(path.read_bytes()).message_id) == envelope.message_id
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(spool.directory.stat().st_mode & 0o777) == "0o700"


def test_duplicate_hook_runs_collapse_into_one_file(spool: Spool) -> None:
    spool.put(build_event("prolog", ENV))
    spool.put(build_event("prolog", ENV))
    assert len(spool.pending()) == 1


def test_flush_publishes_oldest_first_and_empties_the_spool(spool: Spool, log: HookLog) -> None:
    started = spool.put(build_event("prolog", ENV))
    ended = spool.put(build_event("epilog", ENV))
    os.utime(started, (1, 1))  # started is older, whatever the file names sort to
    sender = FakeSender()
    result = flush_once(spool, sender, log)
    assert (result.sent, result.remaining) == (2, 0)
    assert [key for key, _, _ in sender.sent] == ["job.started", "job.ended"]
    assert spool.pending() == []
    assert not ended.exists()
    assert sender.closed == 0, "a pass leaves the connection to its owner (the relay keeps it)"


def test_message_id_on_the_wire_is_the_envelopes(spool: Spool, log: HookLog) -> None:
    envelope = build_event("prolog", ENV)
    spool.put(envelope)
    sender = FakeSender()
    flush_once(spool, sender, log)
    assert sender.sent[0][1] == envelope.message_id


@pytest.mark.parametrize("error", [BrokerUnavailable("down"), PublishRejected("unroutable")])
def test_unconfirmed_events_stay_on_disk(spool: Spool, log: HookLog, error: Exception) -> None:
    spool.put(build_event("prolog", ENV))
    spool.put(build_event("epilog", ENV))
    result = flush_once(spool, FakeSender(fail_at=1, error=error), log)
    assert (result.sent, result.remaining) == (1, 1)
    assert "down" in result.error or "unroutable" in result.error
    assert len(spool.pending()) == 1


def test_a_file_that_is_not_an_envelope_is_set_aside(spool: Spool, log: HookLog) -> None:
    spool.directory.mkdir(parents=True)
    (spool.directory / "job.started.1-r0.json").write_text("not json")
    spool.put(build_event("prolog", ENV))
    result = flush_once(spool, FakeSender(), log)
    assert (result.sent, result.remaining) == (1, 0)
    assert (spool.directory / "bad" / "job.started.1-r0.json").exists()


def test_temp_files_are_never_published(spool: Spool, log: HookLog) -> None:
    spool.directory.mkdir(parents=True)
    (spool.directory / ".tmp-job.started.1-r0.json.99").write_text("{}")
    assert spool.pending() == []


def test_flusher_retries_until_the_spool_is_empty(spool: Spool, log: HookLog) -> None:
    spool.put(build_event("prolog", ENV))
    senders = [FakeSender(fail_at=0), FakeSender(fail_at=0), FakeSender()]
    waits: list[float] = []

    class RecordingStop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0)
            return False

    done = flush_until_empty(
        spool, lambda: senders.pop(0), log, max_backoff_s=1.5, stop=RecordingStop()
    )
    assert done
    assert spool.pending() == []
    assert waits == [1.0, 1.5]  # backoff doubles, capped


def test_only_one_flusher_runs_per_spool(spool: Spool, log: HookLog) -> None:
    spool.put(build_event("prolog", ENV))
    with spool.lock(FLUSH_LOCK) as held:
        assert held
        assert not flush_until_empty(spool, FakeSender, log, max_backoff_s=1)
    assert len(spool.pending()) == 1


def test_hook_spools_logs_and_exits_zero_when_the_broker_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spawned: list[dict[str, str]] = []
    monkeypatch.setattr(
        "services.hooks.flushing.spawn_flusher", lambda env: spawned.append(dict(env)) or 4242
    )
    env = {
        **ENV,
        "HOOKS_ENV_FILE": str(tmp_path / "none"),
        "HOOKS_SPOOL_DIR": str(tmp_path / "outbox"),
        "HOOKS_LOG_FILE": str(tmp_path / "hooks.log"),
        "AMQP_URL": "amqp://u:p@127.0.0.1:1/",  # nothing listens on port 1
    }
    assert main(["prolog"], env) == 0
    assert [p.name for p in (tmp_path / "outbox").glob("*.json")] == ["job.started.42-r0.json"]
    assert len(spawned) == 1
    lines = [json.loads(line) for line in (tmp_path / "hooks.log").read_text().splitlines()]
    assert lines[-1]["event"] == "hook.done"
    assert lines[-1]["remaining"] == 1
    assert lines[-1]["flusher_pid"] == 4242


def test_hook_exits_zero_and_logs_when_not_run_by_slurmd(tmp_path: Path) -> None:
    env = {"HOOKS_ENV_FILE": "/nonexistent", "HOOKS_LOG_FILE": str(tmp_path / "hooks.log")}
    assert main(["epilog"], env) == 0
    assert "event.skipped" in (tmp_path / "hooks.log").read_text()


class RecordingSender:
    """Stands in for AmqpSender; ``down`` makes every send fail like an absent broker."""

    sent: ClassVar[list[tuple[str, str]]] = []
    down: ClassVar[bool] = False

    def __init__(self, *_args: object) -> None:
        pass

    def send(self, routing_key: str, message_id: str, body: bytes, headers: object) -> None:
        if RecordingSender.down:
            raise BrokerUnavailable("nothing listens")
        RecordingSender.sent.append((routing_key, message_id))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("broker_up", [True, False])
def test_a_spool_that_cannot_be_written_fails_the_hook_visibly_with_the_event_sent_directly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    broker_up: bool,
) -> None:
    monkeypatch.setattr("services.hooks.publishing.AmqpSender", RecordingSender)
    monkeypatch.setattr(RecordingSender, "sent", [])
    monkeypatch.setattr(RecordingSender, "down", not broker_up)
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {
        **ENV,
        "HOOKS_ENV_FILE": "/nonexistent",
        "HOOKS_SPOOL_DIR": str(blocker / "outbox"),  # a directory under a file: ENOTDIR
        "HOOKS_LOG_FILE": str(tmp_path / "hooks.log"),
    }
    # Non-zero, for the slurm/prolog wrapper to report (it still exits 0: no drain).
    assert main(["prolog"], env) == EXIT_UNSPOOLED
    [line] = [json.loads(x) for x in (tmp_path / "hooks.log").read_text().splitlines()]
    assert line["event"] == "spool.write_failed"
    assert line["published_directly"] is broker_up
    assert [k for k, _ in RecordingSender.sent] == (["job.started"] if broker_up else [])
    said = capsys.readouterr().err
    assert "cannot spool job.started for 42:r0" in said
    assert ("published directly" in said) is broker_up


def test_the_wrapper_never_fails_the_node_but_reports_a_failed_hook() -> None:
    text = (Path(__file__).parents[4] / "slurm" / "hook").read_text()
    assert text.rstrip().endswith("exit 0")
    assert "logger -t slurm-k8s -p daemon.err" in text


def test_a_deadline_interrupts_a_wait_that_would_not_end() -> None:
    with pytest.raises(DeadlineExpired), deadline(0.05):
        threading.Event().wait(30)


def test_hook_starts_no_second_flusher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spawned: list[object] = []
    monkeypatch.setattr("services.hooks.flushing.spawn_flusher", spawned.append)
    env = {
        **ENV,
        "HOOKS_ENV_FILE": str(tmp_path / "none"),
        "HOOKS_SPOOL_DIR": str(tmp_path / "outbox"),
        "HOOKS_LOG_FILE": str(tmp_path / "hooks.log"),
        "AMQP_URL": "amqp://u:p@127.0.0.1:1/",
    }
    with Spool(tmp_path / "outbox").lock(FLUSH_LOCK) as held:
        assert held
        assert main(["epilog"], env) == 0
    assert spawned == []
    assert '"flusher": "already running"' in (tmp_path / "hooks.log").read_text()


TRACEPARENT = f"00-{'a1' * 16}-{'b2' * 8}-01"


def test_the_jobs_trace_context_rides_through_the_spool_as_a_header(
    spool: Spool, log: HookLog
) -> None:
    env = {**ENV, "SLURM_JOB_COMMENT": f"slurmk8s-key=ab12; traceparent={TRACEPARENT}"}
    envelope = build_event("prolog", env)
    spool.put(envelope, trace_headers(env))
    sender = FakeSender()
    assert flush_once(spool, sender, log).sent == 1
    assert sender.headers == [{"traceparent": TRACEPARENT}]
    assert sender.sent[0][2] == envelope.data  # the body is the bare envelope
    assert decode(sender.sent[0][2]).type == "job.started"


@pytest.mark.parametrize(
    "comment",
    [
        "",
        "slurmk8s-key=ab12",
        f"slurmk8s-key=ab12; traceparent={TRACEPARENT.upper()}",
        f"slurmk8s-key=ab12; traceparent=00-{'0' * 32}-{'2' * 16}-01",
        f"slurmk8s-key=ab12; traceparent={TRACEPARENT}x",
        "traceparent=" + "x" * 5000,
    ],
)
def test_a_missing_or_malformed_trace_context_is_dropped(comment: str) -> None:
    assert trace_headers({**ENV, "SLURM_JOB_COMMENT": comment}) == {}


def test_spooled_headers_that_are_not_strings_are_quarantined(spool: Spool, log: HookLog) -> None:
    path = spool.put(build_event("prolog", ENV))
    path.write_bytes(path.read_bytes() + b'\n{"traceparent": 1}')
    sender = FakeSender()
    flush_once(spool, sender, log)
    assert sender.sent == []
    assert (spool.directory / "bad" / path.name).exists()


def test_quarantined_files_are_bounded(spool: Spool, log: HookLog) -> None:
    from services.hooks import spool as spool_module

    for n in range(spool_module.BAD_KEEP + 5):
        bad = spool.directory / f"job.started.{n}-r0.json"
        spool.directory.mkdir(parents=True, exist_ok=True)
        bad.write_bytes(b"not json")
        os.utime(bad, (n, n))
        flush_once(spool, FakeSender(), log)
    kept = sorted((spool.directory / "bad").iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(kept) == spool_module.BAD_KEEP
    assert kept[-1].name == f"job.started.{spool_module.BAD_KEEP + 4}-r0.json"


def test_an_event_claimed_by_one_sender_is_skipped_by_another(spool: Spool, log: HookLog) -> None:
    spool.put(build_event("prolog", ENV))
    spool.put(build_event("epilog", ENV))
    other = FakeSender()

    class SendsWhileAnotherHookFlushes(FakeSender):
        def send(
            self, routing_key: str, message_id: str, body: bytes, headers: Mapping[str, str]
        ) -> None:
            if not self.sent:
                # A second hook passes over the outbox while this one waits for a confirm.
                assert flush_once(spool, other, log).sent == 1
            super().send(routing_key, message_id, body, headers)

    first = SendsWhileAnotherHookFlushes()
    flush_once(spool, first, log)
    sent = [key for key, _, _ in first.sent + other.sent]
    assert sorted(sent) == ["job.ended", "job.started"]
    assert spool.pending() == []
    assert list(spool.directory.glob("*.json")) == []


def test_a_failed_send_gives_the_claimed_event_back(spool: Spool, log: HookLog) -> None:
    path = spool.put(build_event("prolog", ENV))
    flush_once(spool, FakeSender(fail_at=0), log)
    assert path.exists()
    assert [event.path for event in spool.pending()] == [path]


def test_a_live_senders_claim_is_left_and_a_dead_ones_is_released(spool: Spool) -> None:
    path = spool.put(build_event("prolog", ENV))
    (claimed,) = spool.pending()
    mine = spool.claim(claimed)
    assert mine is not None
    assert not path.exists()
    assert spool.pending() == []  # this (live) process holds it
    assert spool.claim(claimed) is None
    gone = subprocess.Popen(["true"])  # a pid that has exited (and been reaped)
    gone.wait()
    mine.path.rename(spool.directory / f".sending-{gone.pid}.{path.name}")
    assert [event.path for event in spool.pending()] == [path]
    assert path.exists()
