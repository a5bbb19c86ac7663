"""The validator's filesystem work on the NAS: safe reads, no-clobber moves, companions, journal.

Covers reading a dropped file safely, moving it without overwriting anything, writing receipts
and error files, and the submission journal.

Reading follows the drop-folder rules (CWE-59, TOCTOU): ``lstat`` first (a symlink, a
non-regular file or a file over the policy's ``max_script_bytes`` is never opened), then open
with ``O_NOFOLLOW``, ``fstat`` the descriptor, read at most the limit plus one byte, once; what
was checked is what sbatch gets. Moves never overwrite:
``link`` + ``unlink`` fails on an existing name, where ``rename`` would silently replace it.
Files moved by root keep their owner; receipts and error files are given to the job file's
owner (mode 0644) so they can read and remove them.

The journal (``<state_dir>/validator/<key>.json``) records each step before it is taken —
the job id right after sbatch returns, the destination before a move, the final event after —
so a redelivered message resumes where a crashed validator stopped instead of starting over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import TransientError
from shared.fileio import read_record
from shared.receipts import write_for_owner as write_for_owner  # the error files' writer too


@dataclass(frozen=True)
class JobFile:
    """A dropped file as read once: who owns it, what it is, its bytes and their hash.

    ``data`` and ``sha256`` are only there for a regular file within the size limit; a file
    over it (``oversize``) is judged by its ``lstat`` alone and never read.
    """

    path: Path
    uid: int
    gid: int
    size: int
    kind: str  # "file", "hardlink" (st_nlink > 1), "symlink", "directory", "fifo" or "other"
    sha256: str
    data: bytes | None  # None when not a regular file, or over the limit
    mtime_ns: int = 0
    oversize: bool = False
    ctime_ns: int = 0
    """The inode's last status change: set by the kernel (or the NFS server), never by users."""


def read_job_file(path: Path, limit: int) -> JobFile:
    """Look with ``lstat`` first, then open without following links and read ``limit + 1`` bytes.

    A symlink or a non-regular file is never opened; a regular file whose ``lstat`` size is
    over ``limit`` is never opened either (a sparse 1 TB file costs one ``lstat``). A file that
    grows past ``limit`` between the ``lstat`` and the read is caught by the bounded read and
    reported as oversize, with nothing kept.

    Raises:
        FileNotFoundError: it is gone (moved by an earlier delivery, or removed).
        TransientError: the NAS could not be read.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise TransientError(f"cannot look at {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        return _unread(path, st, _special_kind(st))
    if st.st_size > limit:
        return _unread(path, st, _regular_kind(st), oversize=True)
    return _open_and_read(path, limit)


def _open_and_read(path: Path, limit: int) -> JobFile:
    """The read itself: ``O_NOFOLLOW``, ``fstat`` of the descriptor, at most ``limit + 1`` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # replaced by a symlink since the lstat
            return _unread(path, os.lstat(path), "symlink")
        raise TransientError(f"cannot open {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb", buffering=0) as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            return _unread(path, st, _special_kind(st))
        if st.st_size > limit:
            return _unread(path, st, _regular_kind(st), oversize=True)
        kept = bytearray()
        while len(kept) <= limit and (chunk := handle.read(min(1 << 20, limit + 1 - len(kept)))):
            kept += chunk
        if len(kept) > limit:  # grew while we read: say so, keep nothing
            after = os.fstat(handle.fileno())
            return _unread(path, after, _regular_kind(after), oversize=True)
    data = bytes(kept)
    return JobFile(
        path,
        st.st_uid,
        st.st_gid,
        len(data),
        _regular_kind(st),
        hashlib.sha256(data).hexdigest(),
        data,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
    )


def _special_kind(st: os.stat_result) -> str:
    """What a non-regular entry is, for the reason given to its owner."""
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISFIFO(st.st_mode):
        return "fifo"
    return "other"


def _regular_kind(st: os.stat_result) -> str:
    return "file" if st.st_nlink == 1 else "hardlink"


def _unread(path: Path, st: os.stat_result, kind: str, *, oversize: bool = False) -> JobFile:
    """A file judged on its metadata alone: no bytes, no digest."""
    return JobFile(
        path,
        st.st_uid,
        st.st_gid,
        st.st_size,
        kind,
        "",
        None,
        mtime_ns=st.st_mtime_ns,
        oversize=oversize,
        ctime_ns=st.st_ctime_ns,
    )


def unique_destination(directory: Path, name: str, taken: tuple[str, ...] = ()) -> Path:
    """A free name in ``directory``: ``hello.sh``, then ``hello.1.sh``, ``hello.2.sh``, and so on.

    A name counts as taken if it or any of its companions (``taken`` suffixes, e.g.
    ``.error``) exists, so a new file never lands beside an old file's receipt.
    """
    stem, dot, suffix = name.rpartition(".")
    if not stem:  # no dot, or a leading dot only
        stem, dot, suffix = name, "", ""
    for n in range(10_000):
        candidate = name if n == 0 else f"{stem}.{n}{dot}{suffix}"
        paths = [directory / candidate, *(directory / f"{candidate}{t}" for t in taken)]
        if not any(os.path.lexists(p) for p in paths):
            return directory / candidate
    raise TransientError(f"no free name for {name} in {directory}")


def move_no_clobber(source: Path, destination: Path) -> None:
    """Move a file to a name that must not exist yet (idempotent after a crash).

    Raises:
        FileExistsError: the destination holds another file.
        TransientError: the NAS refused the move.
    """
    try:
        os.link(source, destination, follow_symlinks=False)
    except FileExistsError:
        # A crash between link and unlink leaves both names on one inode: finish the move.
        if not _same_file(source, destination):
            raise
    except IsADirectoryError:
        _rename_directory(source, destination)
        return
    except OSError as exc:
        if exc.errno == errno.EPERM and os.path.isdir(source):  # Linux: EPERM for dirs
            _rename_directory(source, destination)
            return
        raise TransientError(f"cannot move {source} to {destination}: {exc.strerror}") from exc
    try:
        os.unlink(source)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TransientError(f"cannot remove {source}: {exc.strerror}") from exc


def _rename_directory(source: Path, destination: Path) -> None:
    """Directories cannot be hard-linked; rename refuses a non-empty target, check the rest."""
    if os.path.lexists(destination):
        raise FileExistsError(errno.EEXIST, "destination exists", str(destination))
    try:
        os.rename(source, destination)
    except OSError as exc:
        raise TransientError(f"cannot move {source} to {destination}: {exc.strerror}") from exc


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samestat(os.lstat(a), os.lstat(b))
    except FileNotFoundError:
        return False


BIRTH_MARK = ".born"
"""Created with the journal; its mtime (the NAS's clock) is when the journal began to exist."""


class Journal:
    """One small JSON record per submission key, updated step by step.

    The journal also knows when it was born (``.born``, made on first use, made again if the
    directory was lost): a file whose inode was last changed after that cannot have been
    submitted by an earlier journal, so for it "no record" means "never tried".

    Args:
        directory: where the records live (created on first use).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def born_ns(self) -> int:
        """When this journal began (``.born``'s mtime, NAS clock), making the mark if missing.

        Raises:
            TransientError: the NAS could not be read or written.
        """
        mark = self._directory / BIRTH_MARK
        try:
            return os.stat(mark).st_mtime_ns
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TransientError(f"cannot look at {mark}: {exc.strerror}") from exc
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another validator made it first
                fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.fsync(fd)
                os.close(fd)
            return os.stat(mark).st_mtime_ns
        except OSError as exc:
            raise TransientError(f"cannot make {mark}: {exc.strerror}") from exc

    def read(self, key: str) -> dict[str, Any]:
        """The record for a key ({} when there is none)."""
        return read_record(self._directory / f"{key}.json", f"journal record {key}")

    def update(self, key: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into the record and make it durable before returning."""
        record = self.read(key) | fields
        path = self._directory / f"{key}.json"
        tmp = path.with_name(f".{key}.json.tmp")
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                # dumps, not dump: only the one-shot encoder is the C one.
                handle.write(json.dumps(record, sort_keys=True))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise TransientError(f"cannot write journal record {key}: {exc.strerror}") from exc
        return record

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the key's lock while handling it, across processes (and NFS clients).

        Two deliveries of one drop can be in flight at once (the watcher published it twice,
        two validators consume the queue); without the lock both could find no job and both
        run sbatch.

        Raises:
            TransientError: another validator holds it; retrying later finds its outcome.
        """
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._directory / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TransientError(f"cannot open lock {key}: {exc.strerror}") from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise TransientError(f"{key} is being handled elsewhere", delay=5) from exc
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def prune(self, *, older_than_s: float, now: float) -> int:
        """Forget finished records older than ``older_than_s``; return how many went.

        Only records with a final event are dropped: an unfinished one is a job that still
        needs filing. A redelivery after pruning finds the file gone and is a stale no-op.
        """
        removed = 0
        try:
            entries = list(self._directory.glob("*.json"))
        except OSError:
            return 0
        for path in entries:
            try:
                if now - path.stat().st_mtime < older_than_s:
                    continue
                if "event" in self.read(path.stem):
                    path.unlink()
                    with contextlib.suppress(FileNotFoundError):
                        (self._directory / f"{path.stem}.lock").unlink()
                    removed += 1
            except (OSError, TransientError):
                continue  # a record we cannot read now is looked at again next time
        return removed
