"""The watcher's I/O loop: events and a rescan timer drive listings; settled files are published.

Settled files are hashed, published with confirms, and recorded in the ledger after each
confirm. Size comes first: a file over the policy's ``max_script_bytes`` (by ``lstat``) is never
opened, and a read stops after ``max_script_bytes + 1`` bytes, so no file, however big or
however fast it grows, holds up the files dropped after it.

Events only say "look now"; every decision is made on a full listing of the submit tree by
the pure code in :mod:`services.watcher.scanning`. That keeps one code path for inotify,
polling, the periodic rescan and the backlog at start, and it tolerates the events watchfiles
drops silently (inotify queue overflow). Listings take at most a small share of the watcher's
time however big the folder (:data:`LISTING_SHARE`). Library and filesystem errors are
translated into ``shared.errors`` here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import pwd
import stat as stat_mode
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from services.watcher.config import WatcherSettings
from services.watcher.ledger import Ledger
from services.watcher.mounts import filesystem_of, should_poll
from services.watcher.scanning import (
    FileStat,
    HashedFile,
    StabilityTracker,
    by_identity,
    is_job_folder,
    is_job_name,
    over_limit,
    unpublished,
)
from shared.errors import BrokerUnavailable, PublishRejected, TransientError
from shared.jobscript import Policy
from shared.logs import get_logger
from shared.messages import Envelope, FileDetected, shown
from shared.metrics import count_file_seen
from shared.telemetry import tracer

_log = get_logger("watcher")
_CHUNK = 1 << 16
LEASE_RECHECK_MS = 100
"""A file held open by its writer is asked about again this often (local filesystems)."""
LISTING_SHARE = 0.02
"""The most of the watcher's time that full listings take while events keep coming: the next
listing waits until the last one's cost is this share of the time since it began.

A listing costs about 13 us a file on the lab's NAS. While the validator drains a burst, every
file it moves out is an event, and events came 7-10 times a second: a 1,000-file burst was
listed about 200 times (1.3 ms of CPU a file, where 100 files cost 0.2), and a folder of 10,000
would have kept a core busy listing. With the share, a quiet folder is listed at once on its
first event (a listing of a few files costs microseconds), and a folder of 1,000 at most
every 0.65 s while it drains.
"""


class NasUnavailable(TransientError):
    """The submit folder cannot be listed or watched (NAS not mounted, stale handle...)."""


Publish = Callable[[Envelope], None]


def _stat_entry(entry: os.DirEntry[str], *, nested: bool) -> FileStat | None:
    """The entry as the watcher sees it, or None when it is left alone.

    ``lstat`` only: a symlink is never followed (a link to another user's file is not a job)
    and a FIFO is never opened. A non-regular entry is reported so that it gets an answer;
    a folder is one only ``nested`` in a sub-folder (top-level folders are searched instead).
    """
    st = entry.stat(follow_symlinks=False)
    if stat_mode.S_ISDIR(st.st_mode) and not nested:
        return None
    regular = stat_mode.S_ISREG(st.st_mode)
    return FileStat(entry.path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_uid, regular)


def list_submit_tree(submit: Path) -> dict[str, FileStat]:
    """Every entry to answer in ``submit/`` and its first-level sub-folders, by absolute path.

    Regular files are the job files; symlinks, FIFOs, sockets, devices and folders inside a
    sub-folder are reported too (``regular`` False), to be refused with a reason.

    Raises:
        NasUnavailable: ``submit/`` itself cannot be listed.
    """
    found: dict[str, FileStat] = {}
    try:
        top = list(os.scandir(submit))
    except OSError as exc:
        raise NasUnavailable(f"cannot list {submit}: {exc}") from exc
    for entry in top:
        try:
            if entry.is_dir(follow_symlinks=False):
                if is_job_folder(entry.name):
                    with os.scandir(entry.path) as inner:
                        for sub in inner:
                            if is_job_name(sub.name) and (stat := _stat_entry(sub, nested=True)):
                                found[stat.path] = stat
            elif is_job_name(entry.name) and (stat := _stat_entry(entry, nested=False)):
                found[stat.path] = stat
        except OSError:
            # Moved away or unreadable between listing and stat (the validator moves files
            # out all the time): the next listing tells the truth.
            continue
    return found


def hash_settled(stat: FileStat, max_bytes: int) -> HashedFile | None:
    """Digest a settled file, or None if it changed or vanished since it was listed.

    A file over ``max_bytes`` (by its listing's ``lstat``) is not opened: it is keyed by its
    identity (:func:`by_identity`). Otherwise the file is opened without following links,
    compared with its listing before and after reading, and at most ``max_bytes + 1`` bytes are
    read, so a file that grows after its listing cannot make the watcher read without end; the
    digest is of the complete file that was judged settled.

    Raises:
        PermissionError: the watcher may not read it.
    """
    if over_limit(stat, max_bytes):  # too big, or not a regular file: never opened
        return by_identity(stat)
    try:
        fd = os.open(stat.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise
        return None  # ELOOP: replaced by a symlink since the listing
    try:
        with os.fdopen(fd, "rb", buffering=0) as fh:
            before = os.fstat(fh.fileno())
            if not stat_mode.S_ISREG(before.st_mode) or _signature(before) != stat.signature:
                return None
            digest = hashlib.sha256()
            left = max_bytes + 1
            while left > 0 and (chunk := fh.read(min(_CHUNK, left))):
                digest.update(chunk)
                left -= len(chunk)
            after = os.fstat(fh.fileno())
    except OSError:
        return None  # EIO, ESTALE on NFS...: judged again on a later listing
    if left <= 0 or _signature(after) != stat.signature:
        return None  # grew (or changed) while read: judged again once it settles
    return HashedFile(stat, digest.hexdigest())


def no_writer(stat: FileStat) -> bool | None:
    """Whether the kernel says no one holds the listed file open for writing.

    A read lease (``fcntl(F_SETLEASE, F_RDLCK)``) is refused with EAGAIN while any process
    has the file open for writing (or mapped writable), and granted otherwise; it is released
    at once. Only the local kernel can answer: on NFS it knows nothing of other clients, so the
    caller asks only on a local filesystem. None: it cannot tell (no lease support, no
    CAP_LEASE and not the owner, the file changed or went since its listing).
    """
    try:
        fd = os.open(stat.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if _signature(os.fstat(fd)) != stat.signature:
            return None
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as exc:
            return False if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return True
    except OSError:
        return None
    finally:
        os.close(fd)


def _utf8(path: str) -> bool:
    """Whether a path listed by the OS (undecodable bytes as surrogates) is valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def rename_to_shown(submit: Path, path: str) -> str | None:
    r"""Give the first entry of ``path`` whose name is not UTF-8 its :func:`shown` name.

    The text ``caf\xe9.sh`` for the bytes ``caf<0xe9>.sh``; returns the new path, or None
    when the entry could not be renamed.

    ``link`` + ``unlink`` never overwrites (``rename`` would); a folder cannot be linked, so it
    is renamed only when the name is free, and a taken name gets ``.1``, ``.2``… before its
    suffix. Owner, mode and content are untouched: the entry is only made nameable.
    """
    relative = Path(path).relative_to(submit)
    current = submit
    for part in relative.parts:
        if _utf8(part):
            current = current / part
            continue
        source = current / part
        wanted = Path(shown(part))
        for n in range(100):
            target = current / (wanted.name if n == 0 else f"{wanted.stem}.{n}{wanted.suffix}")
            try:
                if os.path.isdir(source) and not os.path.islink(source):
                    if os.path.lexists(target):
                        continue
                    os.rename(source, target)
                else:
                    os.link(source, target, follow_symlinks=False)
                    os.unlink(source)
            except FileExistsError:
                continue
            except OSError as exc:
                _log.error("watcher.rename_failed", path=shown(str(source)), error=str(exc))
                return None
            return str(target)
        return None
    return None


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _owner_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@dataclass
class Watcher:
    """Watches one submit folder and publishes each complete, new job file once.

    Args:
        settings: the watcher's settings.
        submit_dir: the folder users drop files into.
        ledger: published keys (durable).
        publish: publishes an envelope and returns once the broker confirmed it.
        clock: a monotonic clock (tests pass a fake one).
        max_script_bytes: the policy's limit; bigger files are published unread, keyed by
            their identity, for the validator to file in failed/.
        keepalive: called on every wake-up (the publisher's heartbeats).
    """

    settings: WatcherSettings
    submit_dir: Path
    ledger: Ledger
    publish: Publish
    clock: Callable[[], float] = time.monotonic
    max_script_bytes: int = Policy().max_script_bytes
    keepalive: Callable[[], None] = lambda: None
    polling: bool = field(init=False, default=False)
    tracker: StabilityTracker = field(init=False)
    _next_rescan: float = field(init=False, default=0.0)
    _broker_wait_until: float = field(init=False, default=0.0)
    _next_listing: float = field(init=False, default=0.0)
    _listing_wanted: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        fstype = filesystem_of(self.submit_dir)
        self.polling = should_poll(self.settings.forced_polling, fstype)
        network = fstype is not None and should_poll(None, fstype)
        window = (
            max(self.settings.network_stability_window_s, self.settings.stability_window_s)
            if network
            else self.settings.stability_window_s
        )
        # On a local filesystem the kernel knows who has a file open for writing: a file no
        # one writes is complete at once (a file renamed in, or closed by cp). The window stays
        # the rule on network filesystems, where it cannot know about other clients.
        leases = self.settings.kernel_completeness and fstype is not None and not network
        self.tracker = StabilityTracker(window, closed=self._closed if leases else None)
        _log.info(
            "watcher.configured",
            submit_dir=str(self.submit_dir),
            filesystem=fstype,
            polling=self.polling,
            stability_window_s=window,
            kernel_completeness=leases,
            max_script_bytes=self.max_script_bytes,
            rescan_interval_s=self.settings.rescan_interval_s,
            ledger=str(self.ledger.path),
            ledger_entries=len(self.ledger),
        )

    def _wake_ms(self) -> int:
        """How often the loop wakes without events.

        watchfiles does not report a writer's close, so a file seen while its writer still
        held it open is asked again on a wake-up: with the kernel's answer in use that is
        every ``LEASE_RECHECK_MS`` (a wake-up with nothing waiting costs no listing);
        otherwise the window decides and the tick is enough.
        """
        if self.tracker.closed_check:
            return min(self.settings.tick_ms, LEASE_RECHECK_MS)
        return self.settings.tick_ms

    def _closed(self, stat: FileStat) -> bool | None:
        """:func:`no_writer` for readable files; anything else is never opened (window rule)."""
        return None if over_limit(stat, self.max_script_bytes) else no_writer(stat)

    def run(self, stop: threading.Event) -> None:
        """Watch until ``stop`` is set; a NAS outage is waited out, not fatal."""
        while not stop.is_set():
            try:
                self._watch(stop)
            except TransientError as exc:
                # The NAS (listing, ledger) or the watch is gone for now: wait it out; files
                # dropped meanwhile are found by the rescan at the restart of the watch.
                _log.warning("watcher.nas_unavailable", error=str(exc), retry_in_s=5)
                stop.wait(5)

    def _watch(self, stop: threading.Event) -> None:
        if not self.submit_dir.is_dir():
            raise NasUnavailable(f"{self.submit_dir} is not a folder (is the NAS mounted?)")
        # The backlog (files dropped while we were down) is found by the first rescan, which
        # is due at once.
        self._next_rescan = self.clock()
        changes_seen = watchfiles.watch(
            self.submit_dir,
            watch_filter=None,  # scanning's rules decide, on listings, not on events
            debounce=self.settings.tick_ms,
            # Changes are handed over once the folder was quiet this long (ms): the listing
            # decides anyway, so a short step only costs an extra listing in a busy burst.
            step=10,
            stop_event=stop,
            rust_timeout=self._wake_ms(),
            yield_on_timeout=True,
            raise_interrupt=False,
            force_polling=self.polling,
            poll_delay_ms=self.settings.poll_delay_ms,
            recursive=True,
            # A user's private sub-folder must not stop the watch; listings report it.
            ignore_permission_denied=True,
        )
        with contextlib.closing(changes_seen):
            while True:
                # Only watchfiles' own errors are handled here; step() raises ours.
                try:
                    changes = next(changes_seen)
                except StopIteration:
                    return  # stop was set
                except FileNotFoundError as exc:
                    raise NasUnavailable(f"{self.submit_dir} vanished: {exc}") from exc
                except (OSError, RuntimeError) as exc:
                    # inotify can run out (max_user_watches, max_user_instances) or fail
                    # inside watchfiles (WatchfilesRustInternalError); polling needs neither.
                    if self.polling:
                        raise NasUnavailable(f"lost the watch on {self.submit_dir}: {exc}") from exc
                    _log.warning("watcher.inotify_failed", error=str(exc), fallback="polling")
                    self.polling = True
                    return
                self.step(events=bool(changes))

    def step(self, *, events: bool) -> int:
        """One pass: list if anything may have changed, publish what settled.

        Returns:
            How many files were published.
        """
        self.keepalive()  # the publisher's connection answers heartbeats while idle
        now = self.clock()
        rescan = now >= self._next_rescan
        # An event seen while listings are held back is kept until the next one is allowed:
        # the loop wakes every tick without events, so it is never forgotten.
        self._listing_wanted = self._listing_wanted or events or self.tracker.settling
        if not (rescan or (self._listing_wanted and now >= self._next_listing)):
            return 0
        snapshot = list_submit_tree(self.submit_dir)
        self._listing_wanted = False
        self._next_listing = now + (self.clock() - now) / LISTING_SHARE
        if rescan:
            self._next_rescan = now + self.settings.rescan_interval_s
            dropped = self.ledger.prune({p: s.ino for p, s in snapshot.items()}, now)
            if dropped:
                _log.info("ledger.pruned", entries=dropped, remaining=len(self.ledger))
        ready = self.tracker.observe(snapshot, now)
        if not ready or now < self._broker_wait_until:
            return 0
        return self._publish_ready(ready)

    def _hash(self, ready: list[FileStat]) -> list[HashedFile]:
        hashed: list[HashedFile] = []
        for stat in ready:
            try:
                result = hash_settled(stat, self.max_script_bytes)
            except PermissionError as exc:
                # Retrying cannot help until the file changes (the tracker reports it again).
                _log.error("watcher.unreadable", path=stat.path, owner_uid=stat.uid, error=str(exc))
                self.tracker.mark_handled(stat)
                continue
            if result is None:
                self.tracker.restart(stat.path, self.clock())
            else:
                hashed.append(result)
        return hashed

    def _publish_ready(self, ready: list[FileStat]) -> int:
        hashed = self._hash(ready)
        fresh = {h.key for h in unpublished(hashed, self.ledger)}
        published = 0
        for item in hashed:
            if item.key not in fresh:
                self.tracker.mark_handled(item.stat)  # same content as published: touch only
                continue
            if not _utf8(item.stat.path):
                # Messages are UTF-8 JSON: a name with other bytes cannot reach the validator
                # (and an exception here would stop the door for everyone, again at restart).
                # The entry is renamed where it is to the name every message would show; the
                # listing then offers it like any other drop, so it gets its answer.
                renamed = rename_to_shown(self.submit_dir, item.stat.path)
                _log.warning(
                    "watcher.name_not_utf8",
                    path=shown(item.stat.path),
                    renamed_to=renamed,
                    owner_uid=item.stat.uid,
                )
                self.tracker.mark_handled(item.stat)
                continue
            body = FileDetected(
                path=item.stat.path,
                size=item.stat.size,
                mtime_ns=item.stat.mtime_ns,
                sha256=item.sha256,
                owner_uid=item.stat.uid,
            )
            try:
                # The root of the job's trace: every later span descends from this file.
                with tracer().start_as_current_span(
                    "watcher file.detected",
                    attributes={
                        "file.path": body.path,
                        "file.size": body.size,
                        "file.sha256": body.sha256,
                        "file.owner_uid": body.owner_uid,
                    },
                ):
                    self.publish(Envelope.wrap(body))
            except (BrokerUnavailable, PublishRejected) as exc:
                # The file stays unhandled and is offered again once the pause is over.
                _log.error("watcher.publish_failed", path=item.stat.path, error=str(exc))
                self._broker_wait_until = self.clock() + self.settings.broker_retry_s
                break
            # Only after the confirm: a crash before this line publishes the same event again
            # after restart, which the validator absorbs (same path, content and mtime make
            # the same submission key).
            self.ledger.record(item.key)
            self.tracker.mark_handled(item.stat)
            published += 1
            count_file_seen(body)
            _log.info(
                "file.published",
                path=item.stat.path,
                owner_uid=item.stat.uid,
                owner=_owner_name(item.stat.uid),
                size=item.stat.size,
                sha256=item.sha256[:12],
                content_hashed=item.content_hashed,
                regular=item.stat.regular,
            )
        return published
