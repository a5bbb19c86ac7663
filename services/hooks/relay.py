"""The node's relay: a resident process that publishes each event the moment a hook spools it.

Without it, every prolog and epilog imports pika and connects to the broker itself: about
all of a hook's 0.2 s, spent on the path from Slurm's start to the Pod and from a job's end
to its cleanup. With it, slurm/hook only writes slurmd's environment to the outbox (durably)
and exits without starting Python; the relay, already connected, sees the file through
inotify, makes the event of it and publishes it with the pass the hooks use
(``flushing.flush_once``).

The relay takes ``RELAY_LOCK`` only once its watch is live, so a hook that finds the lock
held knows its file will be seen; a hook that finds it free publishes inline as before. A
relay that dies leaves its events in the outbox: it publishes them when it starts again, and
the node's next hook publishes them if it does not. While the broker is away the relay
retries with backoff, and at once whenever a new event lands (a recovered broker gets it
without waiting out the backoff).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import watchfiles

from services.hooks.flushing import flush_once
from services.hooks.hooklog import HookLog
from services.hooks.publishing import Sender
from services.hooks.spool import ENV_SUFFIX, RELAY_LOCK, Spool

TICK_S = 1.0
"""How often the relay wakes without a change: heartbeats, a retry that is due, and a rescan
that catches anything the watch could have missed."""
STEP_MS = 5
"""How long the relay lets a burst of changes gather before a pass (watchfiles' ``step``)."""
STANDBY_RETRY_S = 0.5
"""How often a relay that found the node taken tries again (a hook's check holds the lock
for an instant; another relay holds it until it stops)."""


class KeptSender(Sender, Protocol):
    """A sender whose connection outlives one pass."""

    def idle(self) -> None:
        """Keep the connection alive between sends (heartbeats)."""


Changes = Iterable[set[tuple[watchfiles.Change, str]]]
"""Batches of outbox changes; an empty batch is a tick with nothing new."""


def is_new_event(change: watchfiles.Change, path: str) -> bool:
    """Whether a change is an event arriving under its own name.

    Temp files, claims, locks and the removal of an event just sent do not wake the relay.
    """
    name = Path(path).name
    return (
        change == watchfiles.Change.added
        and name.endswith((".json", ENV_SUFFIX))
        and not name.startswith(".")
    )


def watch_outbox(
    spool: Spool, stop: threading.Event
) -> Iterator[set[tuple[watchfiles.Change, str]]]:
    """The outbox's changes, and an empty batch every ``TICK_S`` without any."""
    spool.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return watchfiles.watch(
        spool.directory,
        watch_filter=is_new_event,
        debounce=int(TICK_S * 1000),
        step=STEP_MS,
        stop_event=stop,
        rust_timeout=int(TICK_S * 1000),
        yield_on_timeout=True,
        raise_interrupt=False,
        recursive=False,
    )


def relay(
    spool: Spool,
    sender: KeptSender,
    log: HookLog,
    *,
    max_backoff_s: float,
    stop: threading.Event,
    changes: Callable[[Spool, threading.Event], Changes] = watch_outbox,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Publish the outbox as it fills, until ``stop``.

    The first batch (a change or the first tick) proves the watch is live: only then is the
    lock taken and the outbox passed over, so that what was spooled before is sent too. A
    relay that finds another holding the node waits as its standby.
    """
    delay, retry_at = 1.0, 0.0
    with contextlib.ExitStack() as stack:
        stack.callback(sender.close)
        locked = False
        for batch in changes(spool, stop):
            if not locked:
                if not _hold_node(spool, stack, stop, log):
                    break
                locked = True
                log.write("relay.started", outbox=str(spool.directory))
            now = clock()
            if not batch:
                sender.idle()
                if now < retry_at:
                    continue
            result = flush_once(spool, sender, log)
            if result.remaining:
                retry_at = now + delay
                log.write(
                    "relay.waiting", remaining=result.remaining, error=result.error, retry_s=delay
                )
                delay = min(delay * 2, max_backoff_s)
            else:
                delay, retry_at = 1.0, now + TICK_S
            if stop.is_set():
                break
    log.write("relay.stopped")


def _hold_node(
    spool: Spool, stack: contextlib.ExitStack[bool | None], stop: threading.Event, log: HookLog
) -> bool:
    """Take the node's relay lock into ``stack``, waiting while another process holds it."""
    standby = False
    while True:
        with contextlib.ExitStack() as attempt:
            if attempt.enter_context(spool.lock(RELAY_LOCK)):
                stack.enter_context(attempt.pop_all())
                return True
        if not standby:
            log.write("relay.standby", reason="another relay holds the outbox")
            standby = True
        if stop.wait(STANDBY_RETRY_S):
            return False
