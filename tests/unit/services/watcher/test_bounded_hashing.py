"""The watcher never reads a file over the policy's max_script_bytes, and never reads more than
the limit plus one byte of any file (issue 7: a huge file must not hold up the door)."""

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from services.watcher import watching
from services.watcher.config import WatcherSettings
from services.watcher.ledger import Ledger
from services.watcher.scanning import by_identity
from services.watcher.watching import Watcher, hash_settled, list_submit_tree
from shared.messages import Envelope, FileDetected
from tests.unit.services.reads import count_reads

pytestmark = pytest.mark.unit

LIMIT = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def submit(tmp_path: Path) -> Path:
    path = tmp_path / "submit"
    path.mkdir()
    return path


def never_open(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    real_open = os.open

    def guarded(name: Any, *args: Any, **kwargs: Any) -> int:
        if Path(name) in paths:
            raise AssertionError(f"{name} was opened")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(watching.os, "open", guarded)


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def settle(submit: Path, bodies: list[FileDetected], watcher: Watcher | None = None) -> Watcher:
    def publish(envelope: Envelope) -> None:
        assert isinstance(envelope.body, FileDetected)
        bodies.append(envelope.body)

    if watcher is None:
        clock = Clock()
        settings = WatcherSettings(stability_window_s=2.0, force_polling="false")
        ledger = Ledger(submit.parent / "state", forget_after_s=600)
        watcher = Watcher(settings, submit, ledger, publish, clock=clock, max_script_bytes=LIMIT)
    else:
        assert isinstance(watcher.clock, Clock)  # a monotonic clock goes on, never back
        clock = watcher.clock
        watcher.publish = publish
    watcher.step(events=True)
    clock.now += 2.5
    watcher.step(events=True)
    return watcher


def test_a_huge_file_and_an_ordinary_one_are_published_in_one_pass_the_huge_one_unread(
    submit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = sparse(submit / "huge.sh", 1 << 40)
    hello = submit / "hello.sh"
    hello.write_bytes(b"#!/bin/bash\necho hi\n")
    never_open(monkeypatch, huge)
    bodies: list[FileDetected] = []
    settle(submit, bodies)
    by_path = {b.path: b for b in bodies}
    assert set(by_path) == {str(huge), str(hello)}
    assert by_path[str(hello)].sha256 == hashlib.sha256(hello.read_bytes()).hexdigest()
    assert by_path[str(huge)].size == 1 << 40
    listed = list_submit_tree(submit)[str(huge)]
    assert by_path[str(huge)].sha256 == by_identity(listed).sha256
    assert by_path[str(huge)].sha256 != hashlib.sha256(b"").hexdigest()


def test_a_huge_file_is_published_once_and_again_only_when_it_changes(submit: Path) -> None:
    huge = sparse(submit / "huge.sh", 8 << 30)
    bodies: list[FileDetected] = []
    watcher = settle(submit, bodies)
    watcher = settle(submit, bodies, watcher)  # nothing changed: nothing new
    assert len(bodies) == 1
    os.utime(huge, ns=(1, 1))
    settle(submit, bodies, watcher)
    assert [b.mtime_ns for b in bodies] == [bodies[0].mtime_ns, 1]
    assert bodies[0].sha256 != bodies[1].sha256


def test_the_identity_key_survives_a_restart(submit: Path) -> None:
    sparse(submit / "huge.sh", 8 << 30)
    bodies: list[FileDetected] = []
    settle(submit, bodies)
    settle(submit, bodies)  # a new Watcher on the same ledger: already published
    assert len(bodies) == 1


def test_a_file_of_exactly_the_limit_is_hashed_one_byte_more_is_not(submit: Path) -> None:
    at = submit / "at.sh"
    at.write_bytes(b"x" * LIMIT)
    over = submit / "over.sh"
    over.write_bytes(b"x" * (LIMIT + 1))
    snapshot = list_submit_tree(submit)
    hashed_at = hash_settled(snapshot[str(at)], LIMIT)
    hashed_over = hash_settled(snapshot[str(over)], LIMIT)
    assert hashed_at is not None
    assert hashed_over is not None
    assert hashed_at.content_hashed
    assert hashed_at.sha256 == hashlib.sha256(b"x" * LIMIT).hexdigest()
    assert not hashed_over.content_hashed


def test_a_file_that_grows_while_read_stops_the_read_after_the_limit(
    submit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Listed at 10 bytes; 64 MiB by the time it is read, and fstat (an NFS attribute cache)
    # still says what the listing said. The read stops at limit + 1 and the file is judged
    # again once it settles.
    grown = submit / "grown.sh"
    grown.write_bytes(b"0123456789")
    listed = list_submit_tree(submit)[str(grown)]
    grown.write_bytes(b"y" * (64 << 20))
    monkeypatch.setattr(watching, "_signature", lambda _st: tuple(listed.signature))
    counted = count_reads(monkeypatch, watching)
    assert hash_settled(listed, LIMIT) is None
    assert sum(counted) == LIMIT + 1
