"""``python -m services.validator``: consume ``file.detected``, submit or reject each job file.

Parses the settings and the policy once, runs ``VALIDATOR_WORKERS`` consumers (threads, one
broker connection each) until SIGTERM/SIGINT (the messages in flight are finished first).
Exit status 0 on a clean stop, 2 on a configuration error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import signal
import sys
import threading
import time
from collections.abc import Callable

from services.validator.config import ValidatorSettings
from services.validator.filing import Journal
from services.validator.handlers import ValidatorDeps, ValidatorHandler
from shared.broker import VALIDATOR, Consumer
from shared.config import BrokerSettings, NasSettings
from shared.errors import ConfigError, TransientError
from shared.jobscript import load_policy, policy_path
from shared.lifecycle import start_service
from shared.logs import get_logger
from shared.metrics import observe_consumer
from shared.receipts import ReceiptBook
from shared.slurmctl import Submitter, adopt_session_nofile
from shared.telemetry import current_traceparent

SERVICE = "validator"
# Finished records are only needed while redeliveries can still come; an hour is plenty often.
PRUNE_EVERY_S = 3600.0


def account_name(uid: int) -> str | None:
    """The login name of a uid, or None when it has no account."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def crash_seam(step_to_crash: str) -> Callable[[str], None]:
    """A fault hook that SIGKILLs this process at one named step (integration tests only)."""

    def fault(step: str) -> None:
        if step == step_to_crash:
            get_logger(SERVICE).warning("crash seam reached; killing myself", step=step)
            os.kill(os.getpid(), signal.SIGKILL)

    return fault


def journal_pruner(journal: Journal, receipts: ReceiptBook, *, keep_s: float) -> Callable[[], None]:
    """An idle hook that forgets finished journal and receipt records, at most once an hour."""
    last = [0.0]

    def prune() -> None:
        now = time.time()
        if now - last[0] >= PRUNE_EVERY_S:
            last[0] = now
            removed = journal.prune(older_than_s=keep_s, now=now)
            removed += receipts.prune(older_than_s=keep_s, now=now)
            if removed:
                get_logger(SERVICE).info("journal pruned", removed=removed)

    return prune


def run_all(loops: list[Callable[[], None]]) -> None:
    """Run each consumer loop in its own thread until all have returned (after SIGTERM)."""
    threads = [
        threading.Thread(target=loop, name=f"validator-worker-{n}") for n, loop in enumerate(loops)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> int:
    """Run the validator until stopped."""
    stop = start_service(SERVICE)
    log = get_logger(SERVICE)
    settings = ValidatorSettings()
    nas = NasSettings()
    try:
        path = policy_path()
        policy = load_policy(path)
    except ConfigError as exc:
        log.error("validator.config_error", error=str(exc))
        return 2
    log.info("validator.starting", policy=str(path), submit_dir=str(nas.submit_dir))
    adopt_session_nofile()  # what each sbatch must have; inherited, not set per sbatch
    slurm = Submitter(
        timeout_s=settings.sbatch_timeout_s,
        query_timeout_s=settings.query_timeout_s,
        lookback_days=settings.lookback_days,
        trace=current_traceparent,
    )
    journal = Journal(nas.state_dir / "validator")
    with contextlib.suppress(TransientError):  # else made on the first file handled
        journal.born_ns()  # files changed from now on need no Slurm look-up for their key
    deps = ValidatorDeps(
        policy=policy,
        nas=nas,
        slurm=slurm,
        journal=journal,
        accounts=account_name,
    )
    if settings.crash_at:
        deps = dataclasses.replace(deps, fault=crash_seam(settings.crash_at))
    handler = ValidatorHandler(deps)
    broker = BrokerSettings()
    pruner = journal_pruner(journal, ReceiptBook(nas), keep_s=settings.lookback_days * 86400.0)
    observed = observe_consumer(handler, broker, VALIDATOR)
    consumers = [
        Consumer(
            broker,
            VALIDATOR,
            observed,
            stop,
            on_idle=pruner if n == 0 else None,
            on_dead_letter=handler.dead_lettered,  # park the file in failed/ with an answer
        )
        for n in range(settings.workers)
    ]
    run_all([c.run for c in consumers])
    log.info("validator.stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
