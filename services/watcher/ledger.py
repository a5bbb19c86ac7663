"""The durable record of what the watcher has published, so a restart publishes nothing twice.

One JSON object a line in ``<state_dir>/watcher/published.jsonl``, appended and fsynced only
after the broker confirmed the message. A crash between the confirm and the append publishes
that file again after restart; that is harmless, because the validator is idempotent on the
event (the same path, content and mtime give the same submission key, looked up before any
sbatch). A torn last line from a crash is skipped on load.

Entries whose file has left submit/ (the validator moved it) are forgotten after a grace
period and the file is compacted. A lock file makes a second watcher on the same NAS wait as
a standby instead of racing the first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from services.watcher.scanning import PublishedKey
from shared.errors import ConfigError, TransientError
from shared.logs import get_logger

_log = get_logger("watcher.ledger")


class LedgerUnavailable(TransientError):
    """The ledger on the NAS cannot be written right now."""


class Ledger:
    """Published keys, loaded at start and kept on disk.

    Args:
        directory: where ``published.jsonl`` and the lock live (created if missing).
        forget_after_s: how long an entry outlives its file's presence in submit/.
    """

    def __init__(self, directory: Path, forget_after_s: float) -> None:
        self.directory = directory
        self.path = directory / "published.jsonl"
        self.forget_after_s = forget_after_s
        self._keys: set[PublishedKey] = set()
        self._missing_since: dict[PublishedKey, float] = {}
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the watcher's state folder {directory}: {exc}"
            ) from exc
        self._load()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, 1):
            try:
                data = json.loads(line)
                key = PublishedKey(str(data["path"]), str(data["sha256"]), int(data["ino"]))
            except (ValueError, KeyError, TypeError):
                # A crash can tear only the last append; anything else is worth a warning too.
                _log.warning("ledger.line_skipped", file=str(self.path), line=number)
                continue
            self._keys.add(key)

    def record(self, key: PublishedKey) -> None:
        """Append a key and make it durable before returning.

        Raises:
            LedgerUnavailable: the NAS refused the write (the file is published again later,
                which the validator absorbs).
        """
        line = json.dumps({"path": key.path, "sha256": key.sha256, "ino": key.ino}) + "\n"
        try:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise LedgerUnavailable(f"cannot append to {self.path}: {exc}") from exc
        self._keys.add(key)

    def prune(self, present: Mapping[str, int], now: float) -> int:
        """Forget entries whose file (same path and inode) has been absent for the grace period.

        Args:
            present: path → inode of every job file in the latest full listing.
            now: a monotonic time.

        Returns:
            How many entries were dropped.
        """
        expired: list[PublishedKey] = []
        for key in self._keys:
            if present.get(key.path) == key.ino:
                self._missing_since.pop(key, None)
                continue
            since = self._missing_since.setdefault(key, now)
            if now - since >= self.forget_after_s:
                expired.append(key)
        if not expired:
            return 0
        for key in expired:
            self._keys.discard(key)
            self._missing_since.pop(key, None)
        try:
            self._compact()
        except OSError as exc:
            # The file still holds the dropped entries; they only cost a line each on load.
            _log.warning("ledger.compact_failed", file=str(self.path), error=str(exc))
        return len(expired)

    def _compact(self) -> None:
        # Write the survivors beside the ledger and rename over it: a crash leaves either
        # the old or the new file, never a half-written one.
        tmp = self.path.with_name(self.path.name + ".new")
        with tmp.open("w", encoding="utf-8") as fh:
            for key in sorted(self._keys):
                fh.write(json.dumps({"path": key.path, "sha256": key.sha256, "ino": key.ino}))
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def exclusive(self, stop: threading.Event, wait_s: float = 2.0) -> Iterator[bool]:
        """Hold the watcher lock; a second watcher waits here until the first one stops.

        Yields:
            True once the lock is held, False if ``stop`` was set while waiting.
        """
        with (self.directory / "lock").open("a") as fh:
            announced = False
            while True:
                try:
                    fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOLCK:
                        # NFS without a lock manager: run unlocked rather than not at all.
                        _log.warning("ledger.lock_unsupported", file=str(fh.name))
                        break
                    if exc.errno not in (errno.EACCES, errno.EAGAIN):
                        raise
                if not announced:
                    _log.info("watcher.standby", reason="another watcher holds the lock")
                    announced = True
                if stop.wait(wait_s):
                    yield False
                    return
            yield True
