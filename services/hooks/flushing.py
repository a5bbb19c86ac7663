"""Delivering the outbox: one pass after each hook, and a detached flusher while the broker is away.

The inline pass publishes every spooled event no other sender has claimed (the oldest first)
and stops at the first failure; whatever remains is the job of a flusher that the hook starts
in its own session (so slurmd's end of the prolog never kills it) and that retries with backoff
until the spool is empty. A lock file lets only one flusher run per node; every hook still tries
inline first, so a recovered broker gets new events at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from services.hooks.hooklog import HookLog
from services.hooks.publishing import Sender, routing_of
from services.hooks.spool import Spool, unpack
from shared.errors import DecodeError, ServiceError

LOCK_NAME = ".flush.lock"


@dataclass(frozen=True)
class FlushResult:
    """What one pass delivered and what it left behind."""

    sent: int
    remaining: int
    error: str = ""


def flush_once(spool: Spool, sender: Sender, log: HookLog) -> FlushResult:
    """Publish spooled events oldest first; stop at the first broker failure.

    Each file is claimed before it is read (``Spool.claim``): of hooks and a flusher passing
    over the same outbox at once, one sends a given event, the others skip it. A file is
    removed only after its confirm, and given back to the outbox when its send fails. A file
    that is not an envelope is set aside, never retried forever.
    """
    pending = spool.pending()
    sent = 0
    try:
        for index, listed in enumerate(pending):
            event = spool.claim(listed)
            if event is None:
                continue  # another sender has it
            data = spool.read(event)
            if data is None:
                continue
            try:
                body, headers = unpack(data)
                routing_key, message_id = routing_of(body)
            except DecodeError as exc:
                log.write("spool.quarantined", file=event.file_name, error=str(exc))
                spool.quarantine(event)
                continue
            try:
                sender.send(routing_key, message_id, body, headers)
            except ServiceError as exc:
                spool.release(event)
                return FlushResult(sent, len(pending) - index, f"{type(exc).__name__}: {exc}")
            spool.remove(event)
            sent += 1
            log.write("event.published", file=event.file_name, message_id=message_id)
    finally:
        sender.close()
    return FlushResult(sent, 0)


@contextlib.contextmanager
def flusher_lock(spool: Spool) -> Iterator[bool]:
    """Hold the node's flusher lock, or yield False if another flusher holds it."""
    spool.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(spool.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def flusher_running(spool: Spool) -> bool:
    """Whether a flusher holds the lock (then the hook need not start another).

    A flusher that is just finishing may miss an event spooled this instant; that event is
    not lost, it goes out with the node's next hook run.
    """
    with flusher_lock(spool) as held:
        return not held


def flush_until_empty(
    spool: Spool,
    make_sender: Callable[[], Sender],
    log: HookLog,
    *,
    max_backoff_s: float,
    stop: threading.Event | None = None,
) -> bool:
    """Retry with backoff until the spool is empty (True) or another flusher runs (False)."""
    stop = stop or threading.Event()
    with flusher_lock(spool) as held:
        if not held:
            return False
        delay = 1.0
        while not stop.is_set():
            result = flush_once(spool, make_sender(), log)
            if result.remaining == 0:
                log.write("flusher.done", sent=result.sent)
                return True
            log.write(
                "flusher.waiting", remaining=result.remaining, error=result.error, retry_s=delay
            )
            stop.wait(delay)
            delay = min(delay * 2, max_backoff_s)
    return True


def spawn_flusher(env: Mapping[str, str], python: str = sys.executable) -> int:
    """Start ``python -m services.hooks flush --loop`` detached; returns its pid.

    ``start_new_session`` puts it outside the prolog's process group and session, so neither
    slurmd nor ``timeout`` in the shell script kills it when the hook exits; its stdio goes to
    /dev/null because slurmd may be reading ours.
    """
    process = subprocess.Popen(
        [python, "-I", "-m", "services.hooks", "flush", "--loop"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        env=dict(env),
        cwd="/",
    )
    return process.pid
