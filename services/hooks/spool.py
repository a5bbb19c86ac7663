"""The hook's outbox: one file per event on local disk, written atomically, named by its key.

A file is written to a temporary name, fsynced and renamed, so a reader sees either nothing or
the whole event, even across a power cut. The final name is the event's type and idempotency
key (``job.started.42-r0.json``): a prolog that runs twice for the same run overwrites its
own file instead of queueing a second copy. A file holds the encoded envelope on its first
line and, when there are any, the message's headers (the job's ``traceparent``) as a JSON
object on a second.

Hooks and the flusher of one node run at the same time and read the same directory, so a
sender first claims a file by renaming it to ``.sending-<pid>.<name>``: the rename succeeds for
one process only, and only that one publishes the event. A failed publish renames it back for
the next hook or the flusher; a claim whose process died (killed mid-send by ``timeout``) is
renamed back by the next reader. A file is removed only after the broker confirmed it, so an
event is sent twice only when a sender dies between the confirm and the removal (consumers
are idempotent), never because two hooks ran together.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from services.hooks.events import HookEvent
from shared.errors import DecodeError

_SUFFIX = ".json"
ENV_SUFFIX = ".env"
"""A hook environment handed over by slurm/hook's fast path, for the relay to make an event of:
``<prolog|epilog>.<job id>.<pid>.env``, NUL-separated ``KEY=value`` pairs (``env -0``)."""
MAX_ENV_BYTES = 1 << 20
"""A larger environment file is not a hook's: it is set aside unread."""
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 3600.0
_CLAIM_PREFIX = ".sending-"
_STALE_CLAIM_S = 600.0
"""A claim this old is released even if its pid is alive again (a reused pid): a send is
bounded to seconds (``publishing.AmqpSender``)."""
FLUSH_LOCK = ".flush.lock"
"""Held by the detached flusher that retries while the broker is away (one per node)."""
RELAY_LOCK = ".relay.lock"
"""Held by the node's resident relay while it watches the outbox (``services.hooks.relay``)."""
BAD_KEEP = 100
"""Quarantined files kept in ``bad/`` for an operator; older ones go as new ones arrive."""


def unpack(data: bytes) -> tuple[bytes, dict[str, str]]:
    """A spooled file's (encoded envelope, headers); files without headers give ``{}``.

    Raises:
        DecodeError: the headers line is not a JSON object of strings.
    """
    body, _, extra = data.partition(b"\n")
    if not extra.strip():
        return body, {}
    try:
        headers = json.loads(extra)
    except ValueError as exc:
        raise DecodeError(f"spooled headers are not JSON: {exc!r}") from exc
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise DecodeError("spooled headers are not an object of strings")
    return body, headers


@dataclass(frozen=True)
class SpooledEvent:
    """One event file: pending under its own name, or claimed (``.sending-<pid>.<name>``)."""

    path: Path
    name: str = ""
    """The event's file name in the outbox ("" means ``path.name``)."""

    @property
    def file_name(self) -> str:
        """The event's own file name, claimed or not."""
        return self.name or self.path.name


def file_name(event: HookEvent) -> str:
    """``<type>.<key>.json`` with the key made file-name safe (``job.ended.42-r1.json``)."""
    key = event.key.replace(":", "-").replace("/", "_")
    return f"{event.type}.{key}{_SUFFIX}"


class Spool:
    """A directory of events waiting to be published (created root-only, mode 0700).

    Args:
        directory: the outbox.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def put(
        self,
        event: HookEvent,
        headers: Mapping[str, str] | None = None,
        written_at: float | None = None,
    ) -> Path:
        """Write an event (and its headers) durably; the same run's event replaces the earlier.

        ``written_at`` dates the file when its hook ran earlier than now (a handed-over
        environment made an event later): the outbox is sent in the order its hooks ran.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = self.directory / file_name(event)
        tmp = self.directory / f"{_TMP_PREFIX}{final.name}.{os.getpid()}"
        data = event.data
        if headers:
            data += b"\n" + json.dumps(dict(headers)).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            if written_at is not None:
                os.utime(fd, (written_at, written_at))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        self._sync_directory()
        return final

    def pending(self, suffix: str = _SUFFIX) -> list[SpooledEvent]:
        """Events (or, with ``ENV_SUFFIX``, hook environments) oldest first.

        Oldest first puts a run's start before its end. Abandoned temp files are dropped.

        Files claimed by a live sender are not listed; those of a dead one are released first.
        """
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        events: list[tuple[float, str, SpooledEvent]] = []
        now = time.time()
        for entry in entries:
            try:
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # another flusher just delivered it
            if entry.name.startswith(_TMP_PREFIX):
                # A hook killed mid-write; the event it was writing is the same hook's to redo.
                if now - stat.st_mtime > _STALE_TMP_S:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                continue
            name = entry.name
            if name.startswith(_CLAIM_PREFIX):
                # rename() sets the ctime: it is when the claim was taken.
                name = self._release_abandoned(entry.name, now - stat.st_ctime)
                if not name:
                    continue
            if (
                name.endswith(suffix)
                and not name.startswith(".")
                and entry.is_file(follow_symlinks=False)
            ):
                events.append((stat.st_mtime, name, SpooledEvent(self.directory / name)))
        return [event for _, _, event in sorted(events, key=lambda e: (e[0], e[1]))]

    def claim(self, event: SpooledEvent) -> SpooledEvent | None:
        """Take the event for this process to send, or None if another sender took it first."""
        claimed = self.directory / f"{_CLAIM_PREFIX}{os.getpid()}.{event.file_name}"
        try:
            os.rename(event.path, claimed)
        except FileNotFoundError:
            return None
        return SpooledEvent(claimed, event.file_name)

    def release(self, event: SpooledEvent) -> None:
        """Give a claimed event back to the outbox (its send failed)."""
        with contextlib.suppress(FileNotFoundError):
            # A newer copy of the same run's event may be there: same message, either is fine.
            os.replace(event.path, self.directory / event.file_name)

    def _release_abandoned(self, claimed: str, age_s: float) -> str:
        """Release a dead sender's claim; the event's name if it is pending again, else ""."""
        pid_text, _, name = claimed[len(_CLAIM_PREFIX) :].partition(".")
        if not pid_text.isdigit() or not name.endswith((_SUFFIX, ENV_SUFFIX)):
            return ""
        if _alive(int(pid_text)) and age_s < _STALE_CLAIM_S:
            return ""
        try:
            os.rename(self.directory / claimed, self.directory / name)
        except FileNotFoundError:
            return ""  # its sender finished meanwhile, or another reader released it
        return name

    def read(self, event: SpooledEvent, limit: int = MAX_ENV_BYTES) -> bytes | None:
        """The file's bytes (at most ``limit`` + 1); None if it was sent and removed meanwhile."""
        try:
            with event.path.open("rb") as file:
                return file.read(limit + 1)
        except FileNotFoundError:
            return None

    def modified_at(self, event: SpooledEvent) -> float | None:
        """When the file was written (its hook's time), or None if it is gone."""
        try:
            return event.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def remove(self, event: SpooledEvent) -> None:
        """Forget a confirmed event; already gone is fine (two flushers raced)."""
        with contextlib.suppress(FileNotFoundError):
            event.path.unlink()

    def quarantine(self, event: SpooledEvent) -> None:
        """Set aside a file that is not a valid event, for an operator; it never blocks others."""
        bad = self.directory / "bad"
        bad.mkdir(mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            event.path.rename(bad / event.file_name)
        _keep_newest(bad, BAD_KEEP)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[bool]:
        """Hold the node-wide lock ``name`` (a file in the outbox), or yield False if taken.

        An flock dies with its holder, so a crashed flusher or relay never leaves it held.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def locked(self, name: str) -> bool:
        """Whether another process holds the lock ``name`` now."""
        with self.lock(name) as held:
            return not held

    def _sync_directory(self) -> None:
        # The rename is durable only once the directory entry is on disk.
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    """Whether a process with this pid exists (root's hooks may see others' pids too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _keep_newest(directory: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently changed files of ``directory``."""
    try:
        entries = [(e.stat(follow_symlinks=False).st_mtime, e.path) for e in os.scandir(directory)]
    except OSError:
        return
    for _, path in sorted(entries, reverse=True)[keep:]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
