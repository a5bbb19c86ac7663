import fcntl
import itertools
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared import receipts
from shared.config import NasSettings
from shared.errors import TransientError
from shared.messages import Envelope, PodLaunched
from shared.receipts import ReceiptBook, marking_running

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def nas(tmp_path: Path) -> NasSettings:
    settings = NasSettings(NAS_ROOT=tmp_path)
    settings.submitted_dir.mkdir(parents=True)
    return settings


@pytest.fixture
def book(nas: NasSettings) -> ReceiptBook:
    return ReceiptBook(nas, now=lambda: NOW)


def _receipt(nas: NasSettings) -> Path:
    return nas.submitted_dir / "job.sh.receipt.json"


def _read(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def test_a_receipt_moves_queued_running_finished(nas: NasSettings, book: ReceiptBook) -> None:
    receipt = _receipt(nas)
    book.open(7, receipt, uid=os.getuid(), gid=os.getgid(), fields={"job_id": 7, "user": "a"})
    assert _read(receipt) == {"job_id": 7, "user": "a", "status": "queued", "restart_count": 0}
    assert book.advance(7, 0, "running", node="n1", pod="slurm-jobs/job-7-r0")
    running = _read(receipt)
    assert running["status"] == "running"
    assert running["node"] == "n1"
    assert running["running_at"] == NOW.isoformat()
    assert book.advance(7, 0, "finished", state="COMPLETED", exit_code=0, summary_path="/s")
    finished = _read(receipt)
    assert finished["status"] == "finished"
    assert (finished["state"], finished["exit_code"], finished["node"]) == ("COMPLETED", 0, "n1")
    assert oct(receipt.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in nas.submitted_dir.iterdir()] == [receipt.name]  # no temp files left


def test_progress_never_goes_back_but_a_requeued_run_starts_again(
    nas: NasSettings, book: ReceiptBook
) -> None:
    receipt = _receipt(nas)
    book.open(7, receipt, uid=os.getuid(), gid=os.getgid(), fields={})
    book.advance(7, 0, "finished", state="REQUEUED")
    assert not book.advance(7, 0, "running", node="late retry")
    assert _read(receipt)["status"] == "finished"
    assert book.advance(7, 1, "running", node="n2")
    again = _read(receipt)
    assert (again["status"], again["restart_count"], again["node"]) == ("running", 1, "n2")
    assert "state" not in again  # the first run's end is not this run's


def test_progress_before_the_receipt_is_filed_is_in_it_when_filed(
    nas: NasSettings, book: ReceiptBook
) -> None:
    assert book.advance(9, 0, "running", node="n1")
    assert book.path_of(9) is None
    assert list(nas.submitted_dir.iterdir()) == []
    receipt = _receipt(nas)
    book.open(9, receipt, uid=os.getuid(), gid=os.getgid(), fields={"job_id": 9})
    assert _read(receipt)["status"] == "running"
    assert book.path_of(9) == receipt


def test_the_path_comes_only_from_the_record_and_must_be_a_receipt_in_submitted(
    nas: NasSettings, book: ReceiptBook, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="not a receipt"):
        book.open(1, tmp_path / "elsewhere.receipt.json", uid=0, gid=0, fields={})
    with pytest.raises(ValueError, match="not a receipt"):
        book.open(1, nas.submitted_dir / "job.sh", uid=0, gid=0, fields={})
    # A symlink where the receipt should be is never written through.
    target = tmp_path / "target"
    target.write_text("keep")
    _receipt(nas).symlink_to(target)
    with pytest.raises(TransientError, match="not a regular file"):
        book.open(2, _receipt(nas), uid=os.getuid(), gid=os.getgid(), fields={})
    assert target.read_text() == "keep"


def test_the_receipt_is_rewritten_from_the_record_not_from_the_file(
    nas: NasSettings, book: ReceiptBook
) -> None:
    receipt = _receipt(nas)
    book.open(7, receipt, uid=os.getuid(), gid=os.getgid(), fields={"user": "a"})
    receipt.write_text('{"user": "root", "status": "finished"}')  # its owner may edit it
    book.advance(7, 0, "running")
    assert _read(receipt)["user"] == "a"
    assert _read(receipt)["status"] == "running"


def test_prune_forgets_old_records(nas: NasSettings, book: ReceiptBook) -> None:
    book.advance(5, 0, "running")
    assert book.prune(older_than_s=3600, now=NOW.timestamp() + 10**9) == 1
    assert book.prune(older_than_s=3600, now=NOW.timestamp() + 10**9) == 0


def test_the_launchers_pod_marks_the_receipt_running(nas: NasSettings, book: ReceiptBook) -> None:
    receipt = _receipt(nas)
    book.open(7, receipt, uid=os.getuid(), gid=os.getgid(), fields={})
    launched = Envelope.wrap(
        PodLaunched(job_id=7, restart_count=0, namespace="ns", pod_name="job-7-r0", node="n1")
    )
    handler = marking_running(lambda _envelope: [launched], book)
    assert handler(launched) == [launched]
    assert (_read(receipt)["status"], _read(receipt)["pod"]) == ("running", "ns/job-7-r0")


def test_writers_of_one_job_take_turns_and_other_jobs_do_not_wait_for_them(
    nas: NasSettings, book: ReceiptBook, monkeypatch: pytest.MonkeyPatch
) -> None:
    book.advance(1, 0, "running")  # makes the records' folder
    held = os.open(nas.state_dir / "receipts" / f".lock-{1 % receipts.LOCK_STRIPES}", os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process in the middle of job 1's record
        assert book.advance(2, 0, "running")  # another stripe: not held up
        clock = itertools.count(step=11)  # every look at the clock is 11 s later
        monkeypatch.setattr(receipts.time, "monotonic", lambda: float(next(clock)))
        monkeypatch.setattr(receipts.time, "sleep", lambda _s: None)
        with pytest.raises(TransientError, match="stayed locked"):
            book.advance(1, 0, "finished")
        with pytest.raises(TransientError, match="stayed locked"):
            book.advance(1 + receipts.LOCK_STRIPES, 0, "running")  # the same stripe
    finally:
        os.close(held)
    assert book.advance(1, 0, "finished")
