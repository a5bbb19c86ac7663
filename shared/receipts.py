"""Live receipts: ``submitted/<name>.receipt.json`` follows its job, queued → running → finished.

The validator opens a receipt when it files a job (``open``), the launcher marks it running
when the Pod exists, the collector finished when the run is cleaned up (``advance``). Where a
job's receipt is comes only from the validator's own record, ``<state>/receipts/<job id>.json``
(root-only, beside the journal): never from the file name, the receipt's content or the job's
comment, which users can write. The record also holds what the receipt says (the validator's
fields and the latest progress), so every rewrite is made from trusted data, not from the
receipt file, which its owner may have edited.

The job may start before the validator has filed it (the prolog can beat the receipt), so a
progress without a record creates one without a path, and ``open`` then writes the receipt with
that progress already in it. Progress only moves forward: (restart count, queued < running <
finished), so a late retry of the launcher never turns a finished receipt back to running.

Each rewrite is atomic (a fresh temporary file in ``submitted/``, fsynced, given to the job
file's owner, mode 0644, then renamed over the receipt), so a reader sees the old or the new
receipt, never half of one. A job's writers take its stripe of :data:`LOCK_STRIPES` lock files
(NFS-safe ``flock`` like the journal's): one job's record is never written by two at once, and
writers of different jobs seldom meet.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from shared.config import NasSettings
from shared.errors import TransientError
from shared.fileio import read_record
from shared.logs import get_logger
from shared.messages import Envelope, PodLaunched

RECEIPT_SUFFIX = ".receipt.json"
Status = Literal["queued", "running", "finished"]
_RANK: dict[str, int] = {"queued": 0, "running": 1, "finished": 2}
_log = get_logger(__name__)
LOCK_STRIPES = 64
"""Lock files for the receipt records, a job's chosen by its id. One lock for all of them was
found taken 284 times in 401 by the validator's four workers filing a 400-file burst (each
time a 10 ms wait, two fsyncs long turns); with 64, four writers meet about 5% of the time.
A fixed number of files: nothing to prune, nothing removed while another process holds it."""


def write_for_owner(path: Path, content: str, *, uid: int, gid: int) -> None:
    """Write a small file atomically, owned by uid:gid, readable (0644).

    The temporary file gets a fresh name (``O_EXCL``), so two writers never share one.

    Raises:
        TransientError: the NAS refused the write.
    """
    tmp: str | None = None
    try:
        # Not named after the file: a user's long file name plus a suffix may not fit.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        if os.geteuid() == 0:
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise TransientError(f"cannot write {path}: {exc.strerror}") from exc


class ReceiptBook:
    """The validator's record of each job's receipt, and the rewrites as the job moves.

    Args:
        nas: where ``submitted/`` and the services' state are.
        now: the clock (tests pass a fixed one).
    """

    def __init__(self, nas: NasSettings, now: Callable[[], datetime] | None = None) -> None:
        self._submitted = nas.submitted_dir
        self._directory = nas.state_dir / "receipts"
        self._now = now or (lambda: datetime.now(UTC))

    def open(
        self, job_id: int, receipt: Path, *, uid: int, gid: int, fields: Mapping[str, Any]
    ) -> None:
        """Record where job ``job_id``'s receipt is and write it (with any progress so far).

        Raises:
            TransientError: the NAS refused a write.
            ValueError: ``receipt`` is not a receipt name directly in ``submitted/``.
        """
        self._check_path(receipt)
        with self._locked(job_id):
            record = self._read(job_id)
            record.update(path=str(receipt), uid=uid, gid=gid, fields=dict(fields))
            record.setdefault("progress", {"status": "queued", "restart_count": 0})
            self._write(job_id, record)
            self._render(record)

    def advance(self, job_id: int, restart_count: int, status: Status, **fields: Any) -> bool:
        """Move the job's receipt forward; False when it already says as much or more.

        Fields of the same run are kept (the node and Pod stay on a finished receipt).

        Raises:
            TransientError: the NAS refused a write.
        """
        with self._locked(job_id):
            record = self._read(job_id)
            old = record.get("progress", {"status": "queued", "restart_count": 0})
            if (restart_count, _RANK[status]) <= (old["restart_count"], _RANK[old["status"]]):
                return False
            kept = {k: v for k, v in old.items() if old["restart_count"] == restart_count}
            record["progress"] = kept | fields | {"status": status, "restart_count": restart_count}
            record["progress"][f"{status}_at"] = self._now().isoformat()
            self._write(job_id, record)
            if "path" in record:
                self._render(record)
            return True

    def path_of(self, job_id: int) -> Path | None:
        """Where the job's receipt is, if the validator filed it."""
        path = self._read(job_id).get("path")
        return Path(path) if isinstance(path, str) else None

    def prune(self, *, older_than_s: float, now: float) -> int:
        """Forget records untouched for ``older_than_s`` (the receipts stay); return how many."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self._directory):
                if not entry.name.endswith(".json"):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat(follow_symlinks=False).st_mtime >= older_than_s:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def _check_path(self, receipt: Path) -> None:
        if receipt.parent != self._submitted or not receipt.name.endswith(RECEIPT_SUFFIX):
            raise ValueError(f"{receipt} is not a receipt in {self._submitted}")

    def _render(self, record: dict[str, Any]) -> None:
        receipt = Path(record["path"])
        self._check_path(receipt)
        with contextlib.suppress(FileNotFoundError):
            # Only root writes in submitted/; anything but a regular file there is not ours.
            if not stat.S_ISREG(os.lstat(receipt).st_mode):
                raise TransientError(f"{receipt} is not a regular file; not rewritten")
        document = dict(record["fields"]) | record["progress"]
        text = json.dumps(document, indent=2) + "\n"
        write_for_owner(receipt, text, uid=int(record["uid"]), gid=int(record["gid"]))

    def _read(self, job_id: int) -> dict[str, Any]:
        return read_record(
            self._directory / f"{job_id}.json", f"the receipt record of job {job_id}"
        )

    def _write(self, job_id: int, record: dict[str, Any]) -> None:
        path = self._directory / f"{job_id}.json"
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self._directory, prefix=f".{job_id}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                # dumps, not dump: only the one-shot encoder is the C one.
                handle.write(json.dumps(record, sort_keys=True))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise TransientError(f"cannot record job {job_id}'s receipt: {exc.strerror}") from exc

    @contextlib.contextmanager
    def _locked(self, job_id: int) -> Iterator[None]:
        lock = self._directory / f".lock-{job_id % LOCK_STRIPES}"
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TransientError(f"cannot lock the receipt records: {exc.strerror}") from exc
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() > deadline:
                        raise TransientError(f"{lock.name} stayed locked") from exc
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)


def marking_running(
    handler: Callable[[Envelope], Sequence[Envelope]], book: ReceiptBook
) -> Callable[[Envelope], Sequence[Envelope]]:
    """The launcher's handler, marking the job's receipt running once its Pod exists.

    A receipt that cannot be written is logged, never a reason to retry the launch: it is
    the user's view of the job, not part of running it.
    """

    def handle(envelope: Envelope) -> Sequence[Envelope]:
        follow_ups = handler(envelope)
        for follow_up in follow_ups:
            body = follow_up.body
            if isinstance(body, PodLaunched):
                advance_quietly(
                    book,
                    body.job_id,
                    body.restart_count,
                    "running",
                    node=body.node,
                    pod=f"{body.namespace}/{body.pod_name}",
                )
        return follow_ups

    return handle


def advance_quietly(
    book: ReceiptBook, job_id: int, restart_count: int, status: Status, **fields: Any
) -> None:
    """``book.advance``, with a failure logged instead of raised."""
    try:
        book.advance(job_id, restart_count, status, **fields)
    except TransientError as exc:
        _log.warning("receipt not updated", job_id=job_id, status=status, error=str(exc))
