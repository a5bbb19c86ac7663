"""``python -m services.hooks prolog|epilog|flush [--loop]|relay``: the Slurm side's entry point.

``prolog`` and ``epilog`` are what slurm/hook runs when no relay watches the outbox; ``relay``
is the node's resident publisher (``services.hooks.relay``), ``flush`` delivers the outbox by
hand.

Exit status: 0, or ``EXIT_UNSPOOLED`` (3) when the event could not be written to the spool
(disk full, read-only): the event was then published directly if the broker answered, and the
failure is logged and printed on stderr. The ``slurm/hook`` wrapper (installed as the prolog
and the epilog) turns a non-zero status into a syslog line and still exits 0 itself: Slurm
drains a node whose prolog or epilog fails (and holds the job), which is worse than the
event. Any other failure here is logged and exits 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from services.hooks.events import HookEvent, build_event, trace_headers
from services.hooks.hooklog import HookLog
from services.hooks.settings import HookSettings, load_settings
from services.hooks.spool import RELAY_LOCK, Spool
from shared.errors import ServiceError

# The modules that import pika (flushing, publishing, relay) are imported where a broker is
# talked to: a hook that hands its event to the node's relay never loads them (about 0.1 s).

_USAGE = "usage: python -m services.hooks prolog|epilog|flush [--loop]|relay"
EXIT_UNSPOOLED = 3


def run_hook(kind: str, env: Mapping[str, str], settings: HookSettings) -> int:
    """Spool this run's event; publish the spool unless the node's relay will."""
    log = HookLog(settings.log_file, kind)
    started = time.monotonic()
    try:
        event = build_event("prolog" if kind == "prolog" else "epilog", env)
    except ServiceError as exc:
        log.write("event.skipped", error=str(exc), job_id=env.get("SLURM_JOB_ID"))
        return 0
    spool = Spool(settings.spool_dir)
    try:
        spool.put(event, trace_headers(env))
    except OSError as exc:
        return _publish_unspooled(event, trace_headers(env), settings, log, exc)
    fields: dict[str, object] = {"key": event.key, "message_id": event.message_id}
    if spool.locked(RELAY_LOCK):
        # The relay's watch was live before it took the lock: it sees this file.
        log.write("hook.done", elapsed_ms=_ms_since(started), relay=True, **fields)
        return 0
    from services.hooks.flushing import flush_once, flusher_running, spawn_flusher
    from services.hooks.publishing import AmqpSender

    with contextlib.closing(AmqpSender(settings.amqp_url, settings.publish_timeout_s)) as sender:
        result = flush_once(spool, sender, log)
    fields |= {"sent": result.sent, "remaining": result.remaining}
    if result.remaining:
        fields["error"] = result.error
        if flusher_running(spool):
            fields["flusher"] = "already running"
        else:
            fields["flusher_pid"] = spawn_flusher(env)
    log.write("hook.done", elapsed_ms=_ms_since(started), **fields)
    return 0


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _publish_unspooled(
    event: HookEvent,
    headers: Mapping[str, str],
    settings: HookSettings,
    log: HookLog,
    error: OSError,
) -> int:
    """The spool refused the event: publish it now, without a safety net, and say so."""
    from services.hooks.publishing import AmqpSender

    sender = AmqpSender(settings.amqp_url, settings.publish_timeout_s)
    try:
        sender.send(event.type, event.message_id, event.data, headers)
        delivered, failure = True, ""
    except ServiceError as exc:
        delivered, failure = False, f"{type(exc).__name__}: {exc}"
    finally:
        sender.close()
    fields = {
        "key": event.key,
        "error": f"{type(error).__name__}: {error}",
        "published_directly": delivered,
    }
    if failure:
        fields["publish_error"] = failure
    log.write("spool.write_failed", **fields)
    outcome = "published directly" if delivered else "LOST: the broker did not take it either"
    print(
        f"slurm-k8s hook: cannot spool {event.type} for {event.key} "
        f"({error.strerror or error}); {outcome}",
        file=sys.stderr,
    )
    return EXIT_UNSPOOLED


def run_flush(loop: bool, settings: HookSettings) -> int:
    """Deliver the spool once, or (``--loop``) until it is empty."""
    from services.hooks.flushing import flush_once, flush_until_empty
    from services.hooks.publishing import AmqpSender

    log = HookLog(settings.log_file, "flush")
    spool = Spool(settings.spool_dir)
    if not loop:
        with contextlib.closing(AmqpSender(settings.amqp_url, settings.flush_timeout_s)) as sender:
            result = flush_once(spool, sender, log)
        return 0 if result.remaining == 0 else 1
    flush_until_empty(
        spool,
        lambda: AmqpSender(settings.amqp_url, settings.flush_timeout_s),
        log,
        max_backoff_s=settings.flush_max_backoff_s,
    )
    return 0


def run_relay(settings: HookSettings) -> int:
    """Publish the outbox as hooks fill it, until SIGTERM or SIGINT."""
    from services.hooks.publishing import AmqpSender
    from services.hooks.relay import relay

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    sender = AmqpSender(settings.amqp_url, settings.flush_timeout_s, name="slurm-k8s-hook-relay")
    relay(
        Spool(settings.spool_dir),
        sender,
        HookLog(settings.log_file, "relay"),
        max_backoff_s=settings.flush_max_backoff_s,
        stop=stop,
    )
    return 0


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Dispatch; prolog/epilog swallow every error after logging it."""
    settings = load_settings(env)
    if argv[:1] == ["flush"]:
        return run_flush("--loop" in argv[1:], settings)
    if argv[:1] == ["relay"]:
        return run_relay(settings)
    if argv[:1] not in (["prolog"], ["epilog"]):
        print(_USAGE, file=sys.stderr)
        return 2
    try:
        return run_hook(argv[0], env, settings)
    except Exception as exc:  # the hook's whole point is never to drain a node
        HookLog(settings.log_file, argv[0]).write(
            "hook.failed", error=f"{type(exc).__name__}: {exc}", job_id=env.get("SLURM_JOB_ID")
        )
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
