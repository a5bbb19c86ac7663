import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.watcher import watching
from services.watcher.config import WatcherSettings
from services.watcher.ledger import Ledger, LedgerUnavailable
from services.watcher.watching import Watcher, hash_settled, list_submit_tree
from shared.errors import BrokerUnavailable, TransientError
from shared.messages import Envelope, FileDetected

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Broker:
    """Records confirmed publications; can be told to be down."""

    def __init__(self) -> None:
        self.bodies: list[FileDetected] = []
        self.down = False

    def publish(self, envelope: Envelope) -> None:
        if self.down:
            raise BrokerUnavailable("down")
        assert isinstance(envelope.body, FileDetected)
        self.bodies.append(envelope.body)

    @property
    def paths(self) -> list[str]:
        return [b.path for b in self.bodies]


@pytest.fixture
def submit(tmp_path: Path) -> Path:
    path = tmp_path / "submit"
    path.mkdir()
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def broker() -> Broker:
    return Broker()


def _watcher(submit: Path, clock: Clock, broker: Broker, *, leases: bool = False) -> Watcher:
    settings = WatcherSettings(
        stability_window_s=2.0, force_polling="false", kernel_completeness=leases
    )
    ledger = Ledger(submit.parent / "state", forget_after_s=600)
    return Watcher(settings, submit, ledger, broker.publish, clock=clock)


def _settle(watcher: Watcher, clock: Clock, *, events: bool = False) -> int:
    published = watcher.step(events=events)
    clock.now += 2.5
    return published + watcher.step(events=False)


def test_backlog_at_start_is_published_once_with_its_digest(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    job = submit / "hello.sh"
    job.write_bytes(b"#!/bin/bash\necho hi\n")
    watcher = _watcher(submit, clock, broker)
    assert watcher.step(events=False) == 0  # first sight: not settled yet
    clock.now = 2.0
    assert watcher.step(events=False) == 1
    body = broker.bodies[0]
    assert body.path == str(job)
    assert body.sha256 == hashlib.sha256(job.read_bytes()).hexdigest()
    assert body.size == job.stat().st_size
    assert body.owner_uid == os.getuid()
    clock.now = 40.0
    assert watcher.step(events=True) == 0
    assert len(broker.bodies) == 1


def test_a_file_still_growing_is_published_once_complete(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    watcher = _watcher(submit, clock, broker)
    job = submit / "slow.sh"
    for n in range(5):
        with job.open("ab") as fh:
            fh.write(f"echo {n}\n".encode())
        os.utime(job, ns=(n, n))  # mtime changes with every chunk, as it does for a writer
        assert watcher.step(events=True) == 0
        clock.now += 1.0
    assert _settle(watcher, clock) == 1
    assert broker.bodies[0].sha256 == hashlib.sha256(job.read_bytes()).hexdigest()


def test_ignored_names_are_left_alone_and_links_fifos_and_deep_folders_are_answered(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    for name in (".hidden.sh", "a.tmp", "b.part", "c.swp", "d~", "e.error", "f.receipt.json"):
        (submit / name).write_text("x")
    (submit / "alice").mkdir()
    (submit / "alice" / "deeper").mkdir()
    (submit / "alice" / "deeper" / "g.sh").write_text("x")
    (submit / ".state").mkdir()
    (submit / ".state" / "h.sh").write_text("x")
    target = submit.parent / "elsewhere.sh"
    target.write_text("x")
    (submit / "link.sh").symlink_to(target)
    os.mkfifo(submit / "fifo.sh")  # opening it would block: it must never be opened
    (submit / "alice" / "job.sh").write_text("#!/bin/bash\n")
    watcher = _watcher(submit, clock, broker)
    assert _settle(watcher, clock) == 4
    assert sorted(broker.paths) == sorted(
        str(submit / p) for p in ("alice/job.sh", "alice/deeper", "link.sh", "fifo.sh")
    )
    keyed_by_identity = {b.path: b.sha256 for b in broker.bodies}
    assert keyed_by_identity[str(submit / "link.sh")] != hashlib.sha256(b"x").hexdigest()


def test_touch_without_a_change_publishes_nothing_new_but_an_edit_does(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    job = submit / "job.sh"
    job.write_text("#!/bin/bash\n")
    watcher = _watcher(submit, clock, broker)
    assert _settle(watcher, clock) == 1
    os.utime(job, ns=(1, 1))
    assert _settle(watcher, clock, events=True) == 0
    with job.open("a") as fh:
        fh.write("echo more\n")
    assert _settle(watcher, clock, events=True) == 1
    assert broker.bodies[0].sha256 != broker.bodies[1].sha256


def test_nothing_is_published_twice_across_a_restart(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    (submit / "job.sh").write_text("#!/bin/bash\n")
    assert _settle(_watcher(submit, clock, broker), clock) == 1
    (submit / "new.sh").write_text("#!/bin/bash\necho new\n")
    restarted = _watcher(submit, clock, broker)
    assert _settle(restarted, clock) == 1
    assert broker.paths == [str(submit / "job.sh"), str(submit / "new.sh")]


def test_the_same_content_dropped_again_after_it_left_is_a_new_drop(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    job = submit / "job.sh"
    job.write_text("#!/bin/bash\n")
    watcher = _watcher(submit, clock, broker)
    assert _settle(watcher, clock) == 1
    kept = submit.parent / "submitted.sh"
    job.rename(kept)  # the validator moves it away (the inode lives on in submitted/)
    job.write_text("#!/bin/bash\n")
    assert _settle(watcher, clock, events=True) == 1


def test_a_broker_outage_defers_publishing_and_records_nothing(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    (submit / "job.sh").write_text("#!/bin/bash\n")
    watcher = _watcher(submit, clock, broker)
    broker.down = True
    assert _settle(watcher, clock) == 0
    assert len(watcher.ledger) == 0
    broker.down = False
    clock.now += 1.0
    assert watcher.step(events=False) == 0  # still waiting out the pause
    clock.now += 5.0
    assert watcher.step(events=False) == 1
    assert len(watcher.ledger) == 1


def test_a_hundred_files_at_once_are_each_published_once(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    for n in range(100):
        (submit / f"job-{n:03}.sh").write_text(f"#!/bin/bash\necho {n}\n")
    watcher = _watcher(submit, clock, broker)
    assert _settle(watcher, clock, events=True) == 100
    clock.now += 31
    assert watcher.step(events=True) == 0
    assert len(set(broker.paths)) == len(broker.paths) == 100


def test_hash_settled_refuses_a_file_changed_since_its_listing(submit: Path) -> None:
    job = submit / "job.sh"
    job.write_text("one\n")
    listed = list_submit_tree(submit)[str(job)]
    job.write_text("one and two\n")
    assert hash_settled(listed, 1 << 20) is None
    job.unlink()
    assert hash_settled(listed, 1 << 20) is None


def test_inotify_failure_falls_back_to_polling(
    submit: Path, clock: Clock, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    stop = threading.Event()

    def fake_watch(
        *_paths: object, force_polling: bool, **_kwargs: object
    ) -> Iterator[set[object]]:
        calls.append(force_polling)
        if not force_polling:
            raise OSError(28, "OS file watch limit reached")
        stop.set()
        yield set()

    monkeypatch.setattr("watchfiles.watch", fake_watch)
    watcher = _watcher(submit, clock, broker)
    watcher.run(stop)
    assert calls == [False, True]
    assert watcher.polling


@pytest.mark.parametrize(("mode", "polling"), [("auto", True), ("false", False)])
def test_on_nfs_the_watcher_polls_and_widens_the_window(
    submit: Path, monkeypatch: pytest.MonkeyPatch, mode: str, polling: bool
) -> None:
    monkeypatch.setattr(watching, "filesystem_of", lambda _path: "nfs4")
    settings = WatcherSettings(force_polling=mode)
    watcher = Watcher(settings, submit, Ledger(submit.parent / "s", 60), Broker().publish)
    assert watcher.polling is polling
    assert watcher.tracker.window_s == settings.network_stability_window_s


def test_a_ledger_write_failure_is_transient_and_the_file_is_offered_again(
    submit: Path, clock: Clock, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    (submit / "job.sh").write_text("#!/bin/bash\n")
    watcher = _watcher(submit, clock, broker)
    real_record = watcher.ledger.record

    def failing(_key: object) -> None:
        raise LedgerUnavailable("NAS is read-only")

    monkeypatch.setattr(watcher.ledger, "record", failing)
    watcher.step(events=False)
    clock.now += 2.5
    with pytest.raises(TransientError):
        watcher.step(events=False)
    monkeypatch.setattr(watcher.ledger, "record", real_record)
    assert watcher.step(events=False) == 1  # published again: the validator absorbs it
    assert len(broker.bodies) == 2
    assert broker.bodies[0] == broker.bodies[1]


def test_a_closed_file_on_a_local_filesystem_is_complete_at_once(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    """The kernel's word (a read lease is granted: no writer has it open) beats the window."""
    if os.geteuid() != 0:
        pytest.skip("a read lease needs CAP_LEASE or owning the file: run as root")
    watcher = _watcher(submit, clock, broker, leases=True)
    job = submit / "hello.sh"
    job.write_bytes(b"#!/bin/bash\necho hi\n")
    assert watcher.step(events=True) == 1  # first sight, no time passed
    assert broker.bodies[0].sha256 == hashlib.sha256(job.read_bytes()).hexdigest()


def test_a_file_held_open_for_writing_waits_for_its_writer(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    """A slow writer keeps the file open: never taken half-written, however long it pauses."""
    if os.geteuid() != 0:
        pytest.skip("a read lease needs CAP_LEASE or owning the file: run as root")
    watcher = _watcher(submit, clock, broker, leases=True)
    job = submit / "slow.sh"
    with job.open("wb") as writer:
        writer.write(b"#!/bin/bash\necho 1\n")
        writer.flush()
        assert watcher.step(events=True) == 0
        clock.now += 1.0
        assert watcher.step(events=False) == 0  # quiet, but the writer still holds it
        writer.write(b"echo 2\n")
        writer.flush()
        assert watcher.step(events=True) == 0
    assert watcher.step(events=False) == 1  # closed: complete, with every byte
    assert broker.bodies[0].sha256 == hashlib.sha256(job.read_bytes()).hexdigest()
    assert broker.bodies[0].size == job.stat().st_size


def test_no_writer_says_who_holds_a_file(submit: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read lease needs CAP_LEASE or owning the file: run as root")
    job = submit / "a.sh"
    job.write_bytes(b"x")
    [stat] = list_submit_tree(submit).values()
    assert watching.no_writer(stat) is True
    with job.open("ab"):
        assert watching.no_writer(stat) is False
    job.write_bytes(b"changed")  # no longer the listed file: cannot tell for that listing
    assert watching.no_writer(stat) is None


def test_with_the_kernels_answer_the_loop_wakes_often_enough_to_see_a_close(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    """No event tells of a writer's close: a held-open file is asked again every 0.1 s."""
    assert _watcher(submit, clock, broker, leases=True)._wake_ms() == watching.LEASE_RECHECK_MS
    assert _watcher(submit, clock, broker, leases=False)._wake_ms() == 500


def test_every_wake_up_keeps_the_publishers_connection_alive(
    submit: Path, clock: Clock, broker: Broker
) -> None:
    calls: list[int] = []
    watcher = _watcher(submit, clock, broker)
    watcher.keepalive = lambda: calls.append(1)
    watcher.step(events=False)
    watcher.step(events=False)  # nothing to list: still pumped
    assert len(calls) == 2


def _costly_listings(monkeypatch: pytest.MonkeyPatch, clock: Clock, cost_s: float) -> list[float]:
    """When each listing began; each takes ``cost_s`` on the watcher's clock (a big folder)."""
    began: list[float] = []
    real = watching.list_submit_tree

    def listing(submit: Path) -> dict[str, watching.FileStat]:
        began.append(clock.now)
        clock.now += cost_s
        return real(submit)

    monkeypatch.setattr(watching, "list_submit_tree", listing)
    return began


def test_while_events_keep_coming_a_big_folder_is_listed_at_its_share_of_time(
    submit: Path, clock: Clock, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = _costly_listings(monkeypatch, clock, cost_s=0.1)
    watcher = _watcher(submit, clock, broker)
    watcher.step(events=False)  # the rescan at start
    hold = 0.1 / watching.LISTING_SHARE
    (submit / "a.sh").write_text("#!/bin/bash\n")
    for now in (1.0, 2.0, 3.0, 4.0):  # the validator moving files out, say
        clock.now = now
        watcher.step(events=True)
    assert began == [0.0]
    clock.now = hold
    watcher.step(events=False)  # the held-back event is not forgotten
    assert began == [0.0, hold]
    clock.now = 2 * hold + 0.1  # a.sh settled meanwhile
    assert watcher.step(events=False) == 1
    assert broker.paths == [str(submit / "a.sh")]
    clock.now += hold
    watcher.step(events=False)  # nothing new, nothing settling: no listing
    assert len(began) == 3


def test_a_quiet_folder_is_listed_at_once_and_the_rescan_is_never_held_back(
    submit: Path, clock: Clock, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    began = _costly_listings(monkeypatch, clock, cost_s=0.00005)  # a few files
    watcher = _watcher(submit, clock, broker)
    watcher.step(events=False)
    clock.now = 0.01
    watcher.step(events=True)
    assert began == [0.0, 0.01]
    slow = _costly_listings(monkeypatch, clock, cost_s=1.0)  # held back 50 s after this one
    clock.now = 1.0
    watcher.step(events=True)
    clock.now = 31.0  # the rescan is due (every 30 s)
    watcher.step(events=False)
    assert slow == [1.0, 31.0]
