"""``python -m services.hooks prolog|epilog|flush [--loop]``: what slurm/prolog and epilog run.

Exit status is 0 whatever happens here: a non-zero prolog drains the node and holds the job,
and nothing this hook does is worth that. Failures are logged to the hooks' log instead.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence

from services.hooks.events import build_event, trace_headers
from services.hooks.flushing import (
    flush_once,
    flush_until_empty,
    flusher_running,
    spawn_flusher,
)
from services.hooks.hooklog import HookLog
from services.hooks.publishing import AmqpSender
from services.hooks.settings import HookSettings, load_settings
from services.hooks.spool import Spool
from shared.errors import ServiceError

_USAGE = "usage: python -m services.hooks prolog|epilog|flush [--loop]"


def run_hook(kind: str, env: Mapping[str, str], settings: HookSettings) -> int:
    """Spool this run's event, publish what the spool holds, start a flusher if needed."""
    log = HookLog(settings.log_file, kind)
    started = time.monotonic()
    try:
        envelope = build_event("prolog" if kind == "prolog" else "epilog", env)
    except ServiceError as exc:
        log.write("event.skipped", error=str(exc), job_id=env.get("SLURM_JOB_ID"))
        return 0
    spool = Spool(settings.spool_dir)
    spool.put(envelope, trace_headers(env))
    result = flush_once(spool, AmqpSender(settings.amqp_url, settings.publish_timeout_s), log)
    fields = {
        "key": envelope.body.idempotency_key,
        "message_id": str(envelope.message_id),
        "sent": result.sent,
        "remaining": result.remaining,
    }
    if result.remaining:
        fields["error"] = result.error
        if flusher_running(spool):
            fields["flusher"] = "already running"
        else:
            fields["flusher_pid"] = spawn_flusher(env)
    log.write("hook.done", elapsed_ms=round((time.monotonic() - started) * 1000, 1), **fields)
    return 0


def run_flush(loop: bool, settings: HookSettings) -> int:
    """Deliver the spool once, or (``--loop``) until it is empty."""
    log = HookLog(settings.log_file, "flush")
    spool = Spool(settings.spool_dir)
    if not loop:
        result = flush_once(spool, AmqpSender(settings.amqp_url, settings.flush_timeout_s), log)
        return 0 if result.remaining == 0 else 1
    flush_until_empty(
        spool,
        lambda: AmqpSender(settings.amqp_url, settings.flush_timeout_s),
        log,
        max_backoff_s=settings.flush_max_backoff_s,
    )
    return 0


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Dispatch; prolog/epilog swallow every error after logging it."""
    settings = load_settings(env)
    if argv[:1] == ["flush"]:
        return run_flush("--loop" in argv[1:], settings)
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
