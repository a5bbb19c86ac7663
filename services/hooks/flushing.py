"""Delivering the outbox: passes over it, and a detached flusher while the broker is away.

A pass publishes every spooled event no other sender has claimed (the oldest first) and stops
at the first failure. The node's relay (``services.hooks.relay``) makes one pass whenever an
event lands. Without a relay, each hook makes the pass inline, and whatever remains is the job
of a flusher that the hook starts in its own session (so slurmd's end of the prolog never
kills it) and that retries with backoff until the spool is empty. A lock file lets only one
flusher run per node; every hook still tries inline first, so a recovered broker gets new
events at once.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from services.hooks.events import (
    IncompleteEnvironment,
    build_event,
    parse_environment,
    trace_headers,
)
from services.hooks.hooklog import HookLog
from services.hooks.publishing import Sender, routing_of
from services.hooks.spool import ENV_SUFFIX, FLUSH_LOCK, MAX_ENV_BYTES, Spool, unpack
from shared.errors import DecodeError, ServiceError


@dataclass(frozen=True)
class FlushResult:
    """What one pass delivered and what it left behind."""

    sent: int
    remaining: int
    error: str = ""


def adopt_environments(spool: Spool, log: HookLog) -> None:
    """Make each hook environment slurm/hook handed over into its spooled event (oldest first).

    The environment file is claimed first, like an event, so that of a relay and a hook
    passing at once only one spools the event; it is removed once the event is on disk. The
    event is what the Python hook would have built, with the time the hook ran.
    """
    for listed in spool.pending(ENV_SUFFIX):
        claimed = spool.claim(listed)
        if claimed is None:
            continue
        data, written = spool.read(claimed), spool.modified_at(claimed)
        if data is None or written is None:
            continue
        kind = listed.file_name.partition(".")[0]
        try:
            if kind not in ("prolog", "epilog") or len(data) > MAX_ENV_BYTES:
                raise DecodeError(f"not a hook environment ({kind!r}, {len(data)} bytes)")
            env = parse_environment(data)
            event = build_event(
                "prolog" if kind == "prolog" else "epilog",
                env,
                occurred_at=datetime.fromtimestamp(written, UTC),
            )
        except IncompleteEnvironment as exc:
            # What the Python hook does with it too: not a job of ours (root's, or no job).
            log.write("event.skipped", file=listed.file_name, error=str(exc))
            spool.remove(claimed)
            continue
        except DecodeError as exc:
            log.write("spool.quarantined", file=listed.file_name, error=str(exc))
            spool.quarantine(claimed)
            continue
        spool.put(event, trace_headers(env), written_at=written)
        spool.remove(claimed)


def flush_once(spool: Spool, sender: Sender, log: HookLog) -> FlushResult:
    """Publish spooled events oldest first; stop at the first broker failure.

    Each file is claimed before it is read (``Spool.claim``): of hooks and a flusher passing
    over the same outbox at once, one sends a given event, the others skip it. A file is
    removed only after its confirm, and given back to the outbox when its send fails. A file
    that is not an envelope is set aside, never retried forever. The sender is left open
    (the relay keeps its connection between passes); its owner closes it. Environments
    handed over by slurm/hook are made events first.
    """
    adopt_environments(spool, log)
    pending = spool.pending()
    sent = 0
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
    return FlushResult(sent, 0)


def flusher_running(spool: Spool) -> bool:
    """Whether a flusher holds the lock (then the hook need not start another).

    A flusher that is just finishing may miss an event spooled this instant; that event is
    not lost, it goes out with the node's next hook run.
    """
    return spool.locked(FLUSH_LOCK)


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
    with spool.lock(FLUSH_LOCK) as held:
        if not held:
            return False
        delay = 1.0
        while not stop.is_set():
            with contextlib.closing(make_sender()) as sender:
                result = flush_once(spool, sender, log)
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
