"""Pure decisions of the watcher: which names are job files, and when a file is complete.

No I/O here: the watching loop lists the submit tree into a snapshot (path → :class:`FileStat`)
and asks :class:`StabilityTracker` which files have settled; after hashing them (or, for a file
over the policy's ``max_script_bytes``, keying it :func:`by_identity` without reading a byte)
it asks :func:`unpublished` which ones are new. Time is passed in, so tests use a fake clock.

Layout: ``submit/<file>`` and one level of sub-folders, ``submit/<anything>/<file>`` (e.g. one
folder per user). Every other entry a user leaves there is *answered*, not skipped: a symlink, a
FIFO, a socket or device, and a folder inside a sub-folder (which holds the too-deep files) are
listed as non-regular entries (:attr:`FileStat.regular` False), keyed by identity and never
opened, and the validator files each in ``failed/`` with the reason. Hidden names (``.x``) and
the names of files still being written (``.tmp``, ``.part``…) are left alone: ``.snapshot``
folders, editors' swap files and our own temporaries must never be moved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

# Names editors, downloaders and copy tools use while a file is not finished, and the names
# the validator itself writes (an .error or receipt dropped back into submit/ is not a job).
IGNORED_SUFFIXES = (".tmp", ".part", ".swp", ".swo", ".swx", "~", ".error", ".receipt.json")


def is_job_name(name: str) -> bool:
    """Whether a file name can be a job file: not hidden, not a temporary or our own output."""
    if not name or name.startswith("."):
        return False
    return not name.lower().endswith(IGNORED_SUFFIXES)


def is_job_folder(name: str) -> bool:
    """Whether a sub-folder of submit/ is searched for job files (hidden ones are not)."""
    return bool(name) and not name.startswith(".")


class Signature(NamedTuple):
    """What must stay the same for a file to count as no longer being written."""

    ino: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileStat:
    """An entry seen in the submit tree (from ``lstat``)."""

    path: str
    ino: int
    size: int
    mtime_ns: int
    uid: int
    regular: bool = True
    """False for a symlink, FIFO, socket, device or too-deep folder: never opened nor read."""

    @property
    def signature(self) -> Signature:
        """Inode, size and mtime: a rename-over, an append or a rewrite all change it."""
        return Signature(self.ino, self.size, self.mtime_ns)


class PublishedKey(NamedTuple):
    """One published submission: this path, this content, this file.

    The message's idempotency key is path + sha256; the inode is added here so that a file
    dropped again with the same content after the first one left submit/ is a new drop,
    while ``touch`` (same inode, same content) is not.
    """

    path: str
    sha256: str
    ino: int


@dataclass(frozen=True)
class HashedFile:
    """A settled file with the digest of exactly the bytes that were read.

    A file over the size limit is never read: its ``sha256`` comes from :func:`by_identity`
    (``content_hashed`` False), so it still has a stable key and the validator can file it.
    """

    stat: FileStat
    sha256: str
    content_hashed: bool = True

    @property
    def key(self) -> PublishedKey:
        """The ledger key of this file."""
        return PublishedKey(self.stat.path, self.sha256, self.stat.ino)


def over_limit(stat: FileStat, max_bytes: int) -> bool:
    """Whether an entry must not be read: too big to be a job script, or not a regular file."""
    return not stat.regular or stat.size > max_bytes


def by_identity(stat: FileStat) -> HashedFile:
    """A file over the limit (or a non-regular entry), keyed by what ``lstat`` says.

    sha256 of (path, inode, size, mtime): the same listing gives the same digest (the ledger
    and the validator's submission key stay stable across redeliveries and restarts), and any
    change (append, rewrite, rename-over, touch) gives a new one, like a new content would.
    The ``unhashed`` prefix keeps it apart from any content digest of the same file.
    """
    text = f"slurmk8s-unhashed\0{stat.path}\0{stat.ino}\0{stat.size}\0{stat.mtime_ns}"
    return HashedFile(stat, hashlib.sha256(text.encode()).hexdigest(), content_hashed=False)


@dataclass
class _Seen:
    signature: Signature
    since: float  # first observation with this signature
    last: float  # latest observation with this signature
    handled: bool = False


class StabilityTracker:
    """Tracks each file's signature across listings; a file settles when it stops changing.

    A file is *settled* when two observations at least ``window_s`` apart saw the same
    signature, or when ``closed`` (see :meth:`observe`) says no one writes it any more.
    Settled files are reported once; a later change (append, touch, rewrite) makes the file
    unsettled again and it is reported again once it settles.

    Args:
        window_s: how long the signature must stay the same.
        closed: asks the kernel whether anyone still writes a file (True: no one; False: a
            writer has it open; None: cannot tell). Given only on a local filesystem.
    """

    def __init__(
        self, window_s: float, closed: Callable[[FileStat], bool | None] | None = None
    ) -> None:
        self.window_s = window_s
        self._closed = closed
        self._seen: dict[str, _Seen] = {}

    def observe(self, snapshot: Mapping[str, FileStat], now: float) -> list[FileStat]:
        """Record a full listing of the submit tree taken at ``now``.

        A file is ready when the window has passed with its signature unchanged, or, when the
        tracker was given ``closed`` (the kernel's word, on a local filesystem), as soon as
        ``closed`` says no writer holds it open any more. ``closed`` answering None (cannot
        tell) leaves the window as the rule for that file.

        Returns:
            Files that are settled and not yet handled, in path order.
        """
        for gone in self._seen.keys() - snapshot.keys():
            del self._seen[gone]
        ready: list[FileStat] = []
        for path in sorted(snapshot):
            stat = snapshot[path]
            seen = self._seen.get(path)
            if seen is None or seen.signature != stat.signature:
                seen = self._seen[path] = _Seen(stat.signature, since=now, last=now)
            seen.last = now
            if seen.handled:
                continue
            if seen.last - seen.since >= self.window_s or (
                self._closed is not None and self._closed(stat) is True
            ):
                ready.append(stat)
        return ready

    def mark_handled(self, stat: FileStat) -> None:
        """Stop reporting this file until its signature changes."""
        seen = self._seen.get(stat.path)
        if seen is not None and seen.signature == stat.signature:
            seen.handled = True

    def restart(self, path: str, now: float) -> None:
        """The file changed while it was being read: wait a full window again."""
        seen = self._seen.get(path)
        if seen is not None:
            seen.since = seen.last = now

    @property
    def closed_check(self) -> bool:
        """Whether the kernel's answer is in use (a local filesystem)."""
        return self._closed is not None

    @property
    def settling(self) -> bool:
        """Whether any file is still waiting to settle or to be handled."""
        return any(not s.handled for s in self._seen.values())


def unpublished(
    hashed: Iterable[HashedFile], published: Container[PublishedKey]
) -> list[HashedFile]:
    """The hashed files whose key has not been published yet (a touched file is not new)."""
    return [h for h in hashed if h.key not in published]
