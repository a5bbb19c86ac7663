"""The watcher as a process: a temporary NAS tree on local disk, a real broker in a fresh vhost.

Each test reads ``file.detected`` from its own exclusive queue bound to the events exchange.
Instead of sleeping for "long enough", tests that expect *nothing* drop a sentinel file after
the action and wait for the sentinel: the watcher handles files in the order they settle, so
by the time the sentinel is published the earlier file has been judged too.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from shared.broker.topology import EVENTS_EXCHANGE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 60.0


class Events:
    """``file.detected`` bodies seen on an exclusive queue of our own."""

    def __init__(self, url: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(EVENTS_EXCHANGE, exchange_type="topic", durable=True)
        declared = self.channel.queue_declare("", exclusive=True, auto_delete=True)
        self.queue = declared.method.queue
        self.channel.queue_bind(self.queue, EVENTS_EXCHANGE, routing_key="file.detected")
        self.bodies: list[dict[str, object]] = []
        self.message_ids: list[str] = []
        self.arrival: dict[str, float] = {}

    def poll(self) -> None:
        while True:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return
            envelope = json.loads(body)
            data = envelope["body"]
            self.bodies.append(data)
            self.message_ids.append(envelope["message_id"])
            self.arrival.setdefault(str(data["path"]), time.monotonic())

    def wait_until(
        self, done: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S
    ) -> None:
        end = time.monotonic() + deadline_s
        while True:
            self.poll()
            if done():
                return
            if time.monotonic() > end:
                pytest.fail(f"timed out waiting for {what}; seen: {self.paths()}")
            self.connection.sleep(0.1)  # keeps the connection's heartbeats going

    def paths(self) -> list[str]:
        return [str(b["path"]) for b in self.bodies]

    def count(self, path: Path) -> int:
        return self.paths().count(str(path))

    def wait_for(self, path: Path) -> dict[str, object]:
        self.wait_until(lambda: self.count(path) > 0, f"file.detected for {path.name}")
        return next(b for b in self.bodies if b["path"] == str(path))

    def close(self) -> None:
        self.connection.close()


class WatcherProcess:
    """``python -m services.watcher`` on a NAS tree, logging to a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.watcher"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    root = tmp_path / "nas"
    submit = root / "slurm-jobs" / "submit"
    submit.mkdir(parents=True)
    submit.chmod(0o1777)
    (root / "slurm-jobs" / ".state").mkdir()
    return root


@pytest.fixture
def submit(nas: Path) -> Path:
    return nas / "slurm-jobs" / "submit"


@pytest.fixture
def events(vhost_url: str) -> Iterator[Events]:
    seen = Events(vhost_url)
    try:
        yield seen
    finally:
        seen.close()


@pytest.fixture
def make_watcher(
    nas: Path, vhost_url: str, tmp_path: Path
) -> Iterator[Callable[..., WatcherProcess]]:
    started: list[WatcherProcess] = []

    def make(**settings: str) -> WatcherProcess:
        env = {
            **os.environ,
            "NAS_ROOT": str(nas),
            "AMQP_URL": vhost_url,
            "LOG_FORMAT": "json",
            **settings,
        }
        watcher = WatcherProcess(env, tmp_path / "watcher.log")
        watcher.start()
        started.append(watcher)
        return watcher

    yield make
    for watcher in started:
        watcher.kill()
    log = tmp_path / "watcher.log"
    if log.exists():
        sys.stderr.write(log.read_text()[-4000:])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _job(n: int | str) -> bytes:
    return f"#!/bin/bash\n#SBATCH --job-name=t{n}\necho {n}\n".encode()


@pytest.mark.parametrize("polling", ["false", "true"], ids=["inotify", "polling"])
def test_a_slowly_written_file_is_published_once_complete(
    submit: Path, events: Events, make_watcher: Callable[..., WatcherProcess], polling: str
) -> None:
    make_watcher(WATCHER_FORCE_POLLING=polling)
    job = submit / "slow.sh"
    with job.open("wb") as fh:
        for n in range(6):  # a chunk every 0.8 s: never still for the 2 s window
            if n:
                time.sleep(0.8)
            fh.write(_job(n))
            fh.flush()
    written = time.monotonic()
    body = events.wait_for(job)
    latency = events.arrival[str(job)] - written
    print(f"\nmeasured ({polling=}): published {latency:.2f} s after the last write")
    assert body["sha256"] == _sha(job)
    assert body["size"] == job.stat().st_size
    assert body["owner_uid"] == os.getuid()
    sentinel = submit / "sentinel.sh"
    sentinel.write_bytes(_job("sentinel"))
    events.wait_for(sentinel)
    assert events.count(job) == 1


def test_hidden_and_temporary_files_are_ignored_subfolders_are_not(
    submit: Path, events: Events, make_watcher: Callable[..., WatcherProcess]
) -> None:
    make_watcher()
    for name in (".hidden.sh", "a.sh.tmp", "b.sh.part", ".c.sh.swp", "d.sh~", "e.sh.error"):
        (submit / name).write_bytes(_job(name))
    (submit / "alice").mkdir()
    nested = submit / "alice" / "job.sh"
    nested.write_bytes(_job("nested"))
    events.wait_for(nested)
    sentinel = submit / "sentinel.sh"
    sentinel.write_bytes(_job("sentinel"))
    events.wait_for(sentinel)
    assert sorted(events.paths()) == sorted([str(nested), str(sentinel)])


def test_a_file_dropped_while_down_is_found_and_old_ones_are_not_republished(
    submit: Path, events: Events, make_watcher: Callable[..., WatcherProcess]
) -> None:
    watcher = make_watcher()
    first = submit / "first.sh"
    first.write_bytes(_job("first"))
    events.wait_for(first)
    asked = time.monotonic()
    assert watcher.stop() == 0  # SIGTERM: a clean stop
    print(f"\nmeasured: stopped {time.monotonic() - asked:.2f} s after SIGTERM")
    later = submit / "while-down.sh"
    later.write_bytes(_job("later"))
    make_watcher()
    events.wait_for(later)
    sentinel = submit / "sentinel.sh"
    sentinel.write_bytes(_job("sentinel"))
    events.wait_for(sentinel)
    assert events.count(first) == 1  # still in submit/, but recorded as published


def test_the_periodic_rescan_finds_files_the_events_missed(
    submit: Path, events: Events, make_watcher: Callable[..., WatcherProcess]
) -> None:
    # Polling that never comes round stands in for a lost event (inotify queue overflow,
    # an NFS client's write): only the rescan can find the file.
    make_watcher(
        WATCHER_FORCE_POLLING="true",
        WATCHER_POLL_DELAY_MS="3600000",
        WATCHER_RESCAN_INTERVAL_S="2",
    )
    time.sleep(1)  # past the rescan at start
    missed = submit / "missed.sh"
    missed.write_bytes(_job("missed"))
    body = events.wait_for(missed)
    assert body["sha256"] == _sha(missed)


def test_a_lost_ledger_record_republishes_the_same_event(
    nas: Path, submit: Path, events: Events, make_watcher: Callable[..., WatcherProcess]
) -> None:
    # A crash between the broker's confirm and the ledger append looks like this after
    # restart: the file was published but not recorded. It is published again as the very
    # same event (same message id, same key), which the validator deduplicates.
    watcher = make_watcher()
    job = submit / "job.sh"
    job.write_bytes(_job("crash"))
    events.wait_for(job)
    assert watcher.stop() == 0
    (nas / "slurm-jobs" / ".state" / "watcher" / "published.jsonl").unlink()
    make_watcher()
    events.wait_until(lambda: events.count(job) == 2, "the re-publish")
    assert events.bodies[0] == events.bodies[1]
    assert events.message_ids[0] == events.message_ids[1]


def test_touching_a_file_publishes_nothing_new(
    submit: Path, events: Events, make_watcher: Callable[..., WatcherProcess]
) -> None:
    make_watcher()
    job = submit / "job.sh"
    job.write_bytes(_job("touch"))
    events.wait_for(job)
    os.utime(job)
    time.sleep(0.1)
    sentinel = submit / "sentinel.sh"
    sentinel.write_bytes(_job("sentinel"))
    events.wait_for(sentinel)
    assert events.count(job) == 1


def test_a_hundred_files_dropped_at_once_are_each_published_once(
    submit: Path, events: Events, make_watcher: Callable[..., WatcherProcess]
) -> None:
    # A short rescan interval, so rescans run while the files are still there.
    make_watcher(WATCHER_RESCAN_INTERVAL_S="3")
    events.poll()
    paths = [submit / f"bulk-{n:03}.sh" for n in range(100)]
    started = time.monotonic()
    for n, path in enumerate(paths):
        path.write_bytes(_job(n))
    events.wait_until(lambda: all(events.count(p) for p in paths), "all 100 files", deadline_s=120)
    print(f"\nmeasured: 100 files dropped -> all published in {time.monotonic() - started:.2f} s")
    time.sleep(4)  # at least one more rescan with every file still present
    sentinel = submit / "sentinel.sh"
    sentinel.write_bytes(_job("sentinel"))
    events.wait_for(sentinel)
    keys = [f"{b['path']}:{b['sha256']}" for b in events.bodies if b["path"] != str(sentinel)]
    assert len(keys) == len(set(keys)) == 100
    assert {str(p) for p in paths} == {str(b["path"]) for b in events.bodies} - {str(sentinel)}
