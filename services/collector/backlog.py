"""The reconcile's view of the submit folder: job files that waited too long for an answer.

A file leaves ``submit/`` for ``submitted/`` or ``failed/`` once the validator has handled its
event; one still there long after it last changed has lost its event (dead-lettered, or
dropped while the watcher's ledger said it was published). Its event is rebuilt with the
watcher's own listing and digest (``services.watcher.watching``), so it carries the same
submission key and the validator finds, rather than repeats, anything already done for it.
Age counts from the later of mtime and ctime: a file copied with its old mtime (``cp -p``)
or renamed in is new when its ctime is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from services.watcher.watching import hash_settled, list_submit_tree
from shared.messages import FileDetected


class SubmitBacklog:
    """``Backlog`` over the NAS.

    Args:
        submit_dir: the folder users drop files into.
        max_script_bytes: the policy's limit (a bigger file is keyed, as by the watcher,
            by its identity).
        clock: wall-clock seconds (file times are wall-clock).
    """

    def __init__(
        self, submit_dir: Path, max_script_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._submit_dir = submit_dir
        self._max_bytes = max_script_bytes
        self._clock = clock

    def waiting(self, older_than_s: float) -> list[FileDetected]:
        """Events for files unchanged for longer than the bound (unreadable ones are left).

        Raises:
            NasUnavailable: ``submit/`` cannot be listed.
        """
        now = self._clock()
        events: list[FileDetected] = []
        for stat in list_submit_tree(self._submit_dir).values():
            try:
                changed = os.lstat(stat.path).st_ctime
            except OSError:
                continue  # moved away since the listing: answered
            if now - max(changed, stat.mtime_ns / 1e9) < older_than_s:
                continue
            try:
                hashed = hash_settled(stat, self._max_bytes)
            except PermissionError:
                continue  # the watcher cannot read it either; it logged why
            if hashed is None:
                continue  # changed since the listing: not waiting, being written
            events.append(
                FileDetected(
                    path=stat.path,
                    size=stat.size,
                    mtime_ns=stat.mtime_ns,
                    sha256=hashed.sha256,
                    owner_uid=stat.uid,
                )
            )
        return events
