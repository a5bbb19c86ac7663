import pytest

from services.watcher.scanning import (
    FileStat,
    HashedFile,
    PublishedKey,
    StabilityTracker,
    is_job_folder,
    is_job_name,
    unpublished,
)

pytestmark = pytest.mark.unit

WINDOW = 2.0


def _stat(path: str = "/s/job.sh", *, size: int = 10, mtime_ns: int = 1, ino: int = 7) -> FileStat:
    return FileStat(path=path, ino=ino, size=size, mtime_ns=mtime_ns, uid=2001)


@pytest.mark.parametrize(
    "name",
    ["hello.sh", "job", "run.sbatch", "a.b.c", "tmp.sh", "part1.sh", "x.error.sh"],
)
def test_job_names(name: str) -> None:
    assert is_job_name(name)


@pytest.mark.parametrize(
    "name",
    [
        ".hidden.sh",
        ".job.sh.swp",
        "job.sh.tmp",
        "job.sh.TMP",
        "job.sh.part",
        "job.sh.swp",
        "job.sh~",
        "job.sh.error",
        "job.sh.receipt.json",
        "",
    ],
)
def test_ignored_names(name: str) -> None:
    assert not is_job_name(name)


@pytest.mark.parametrize(("name", "expected"), [("alice", True), (".state", False), ("", False)])
def test_hidden_folders_are_not_searched(name: str, expected: bool) -> None:
    assert is_job_folder(name) is expected


def test_a_file_settles_after_the_window_and_is_reported_once() -> None:
    tracker = StabilityTracker(WINDOW)
    assert tracker.observe({"/s/job.sh": _stat()}, now=0.0) == []
    assert tracker.observe({"/s/job.sh": _stat()}, now=1.9) == []
    assert tracker.observe({"/s/job.sh": _stat()}, now=2.0) == [_stat()]
    # Not handled yet (e.g. the broker was down): offered again.
    assert tracker.observe({"/s/job.sh": _stat()}, now=2.5) == [_stat()]
    tracker.mark_handled(_stat())
    assert tracker.observe({"/s/job.sh": _stat()}, now=10.0) == []
    assert not tracker.settling


def test_a_growing_file_waits_until_it_stops_changing() -> None:
    tracker = StabilityTracker(WINDOW)
    for size in range(1, 8):  # a chunk every 1.5 s: never still for the window
        assert tracker.observe({"/s/job.sh": _stat(size=size, mtime_ns=size)}, 1.5 * size) == []
    final = _stat(size=7, mtime_ns=7)  # last written at 10.5
    assert tracker.observe({"/s/job.sh": final}, 12.0) == []
    assert tracker.observe({"/s/job.sh": final}, 12.5) == [final]


def test_a_changed_mtime_or_inode_restarts_the_window() -> None:
    tracker = StabilityTracker(WINDOW)
    tracker.observe({"/s/job.sh": _stat()}, 0.0)
    assert tracker.observe({"/s/job.sh": _stat(mtime_ns=2)}, 2.0) == []
    assert tracker.observe({"/s/job.sh": _stat(mtime_ns=2, ino=8)}, 4.0) == []
    assert tracker.observe({"/s/job.sh": _stat(mtime_ns=2, ino=8)}, 6.0) == [
        _stat(mtime_ns=2, ino=8)
    ]


def test_a_touched_file_is_offered_again_after_settling() -> None:
    tracker = StabilityTracker(WINDOW)
    tracker.observe({"/s/job.sh": _stat()}, 0.0)
    tracker.mark_handled(tracker.observe({"/s/job.sh": _stat()}, 2.0)[0])
    touched = _stat(mtime_ns=99)
    assert tracker.observe({"/s/job.sh": touched}, 3.0) == []
    assert tracker.settling
    assert tracker.observe({"/s/job.sh": touched}, 5.0) == [touched]


def test_a_vanished_file_is_forgotten() -> None:
    tracker = StabilityTracker(WINDOW)
    tracker.observe({"/s/job.sh": _stat()}, 0.0)
    tracker.observe({}, 1.0)
    assert not tracker.settling
    assert tracker.observe({"/s/job.sh": _stat()}, 2.5) == []  # a new window starts


def test_restart_after_a_change_during_hashing_waits_a_full_window() -> None:
    tracker = StabilityTracker(WINDOW)
    tracker.observe({"/s/job.sh": _stat()}, 0.0)
    assert tracker.observe({"/s/job.sh": _stat()}, 2.0)
    tracker.restart("/s/job.sh", 2.0)
    assert tracker.observe({"/s/job.sh": _stat()}, 3.0) == []
    assert tracker.observe({"/s/job.sh": _stat()}, 4.0) == [_stat()]


def test_mark_handled_ignores_a_stale_signature() -> None:
    tracker = StabilityTracker(WINDOW)
    tracker.observe({"/s/job.sh": _stat(size=2)}, 0.0)
    tracker.mark_handled(_stat(size=1))
    assert tracker.settling


def test_files_are_reported_in_path_order() -> None:
    tracker = StabilityTracker(WINDOW)
    snapshot = {p: _stat(p) for p in ("/s/c", "/s/a", "/s/b")}
    tracker.observe(snapshot, 0.0)
    assert [s.path for s in tracker.observe(snapshot, 2.0)] == ["/s/a", "/s/b", "/s/c"]


def test_unpublished_skips_known_keys() -> None:
    old = HashedFile(_stat("/s/a"), "a" * 64)
    new = HashedFile(_stat("/s/b"), "b" * 64)
    assert old.key == PublishedKey("/s/a", "a" * 64, 7)
    assert unpublished([old, new], {old.key}) == [new]
