import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.watcher.ledger import Ledger
from services.watcher.scanning import PublishedKey

pytestmark = pytest.mark.unit

KEY = PublishedKey("/nas/submit/job.sh", "a" * 64, 42)
OTHER = PublishedKey("/nas/submit/other.sh", "b" * 64, 43)


def test_recorded_keys_survive_a_restart(tmp_path: Path) -> None:
    Ledger(tmp_path / "w", 60).record(KEY)
    again = Ledger(tmp_path / "w", 60)
    assert KEY in again
    assert OTHER not in again
    assert len(again) == 1


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, 60)
    ledger.record(KEY)
    with ledger.path.open("a") as fh:
        fh.write('{"path": "/nas/submit/x", "sha')  # crash in the middle of an append
    assert KEY in Ledger(tmp_path, 60)


def test_entries_are_forgotten_after_the_file_is_gone_for_the_grace(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, forget_after_s=60)
    ledger.record(KEY)
    ledger.record(OTHER)
    present = {OTHER.path: OTHER.ino}
    assert ledger.prune(present, now=0.0) == 0  # KEY's file just went missing
    assert ledger.prune(present, now=59.0) == 0
    assert ledger.prune(present, now=60.0) == 1
    assert KEY not in ledger
    reloaded = Ledger(tmp_path, 60)  # the compacted file keeps the survivors only
    assert KEY not in reloaded
    assert OTHER in reloaded


def test_a_file_that_comes_back_resets_the_grace(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, forget_after_s=60)
    ledger.record(KEY)
    ledger.prune({}, now=0.0)
    ledger.prune({KEY.path: KEY.ino}, now=30.0)
    assert ledger.prune({}, now=70.0) == 0
    assert ledger.prune({}, now=130.0) == 1


def test_the_same_path_with_another_inode_counts_as_gone(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, forget_after_s=0)
    ledger.record(KEY)
    assert ledger.prune({KEY.path: KEY.ino + 1}, now=0.0) == 1


def test_a_second_watcher_waits_for_the_lock(tmp_path: Path) -> None:
    # fcntl locks belong to a process, so the first watcher is another process.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"fh = open({str(tmp_path / 'lock')!r}, 'a')\n"
            "fcntl.lockf(fh, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        with Ledger(tmp_path, 60).exclusive(stop, wait_s=0.05) as held:
            assert held is False  # stopped while standing by
    finally:
        holder.kill()
        holder.communicate()
    with Ledger(tmp_path, 60).exclusive(threading.Event(), wait_s=0.05) as held:
        assert held is True
