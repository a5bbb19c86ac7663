"""The one reconciler: at start and periodically, Slurm, Kubernetes and the NAS are compared.

It runs in the collector, the service that owns a run's outcome (issue 9: until then the
launcher and the collector each ran a sweep and wrote the AdminComment differently). Each
difference is repaired through the path that normally handles it, so there is one way to do
each thing and every repair is as idempotent as that path:

- a run with labelled objects whose job Slurm explicitly reports finished is finished and
  cleaned by ``Collector.finish_run`` (every kind of object the launcher makes);
- a slurm-k8s job slurmctld shows RUNNING whose run has neither a handoff nor a refusal
  from the launcher some time after it started (its ``job.started`` was lost, or the launcher
  died between the Pod and the handoff) gets its ``job.started`` again: the launcher creates
  or adopts the run's objects (names are fixed per job and restart count, so never a second
  Pod) or refuses it with a reason its batch step prints;
- a file that has waited in ``submit/`` longer than a bound (its event was lost or
  dead-lettered) gets its ``file.detected`` again, with the watcher's own listing and digest,
  so the same submission key: the validator finds the job it may already have submitted.

Fail closed: nothing is deleted unless Slurm explicitly says the run finished (``classify``);
a lookup that fails raises and changes nothing, and a lookup that returns nothing gives
nothing to repair. Republishing is never destructive, and each repair is repeated at most
once per bound, so a slow consumer is not flooded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from services.collector.handlers import Collector, Finished, RunKey
from shared.errors import ServiceError
from shared.jobscript.wrapping import ACCEPTED_MARK
from shared.logs import get_logger
from shared.messages import Envelope, FileDetected, JobStarted
from shared.slurmctl import JobInfo

_log = get_logger(__name__)
T = TypeVar("T")
K = TypeVar("K")


class JobList(Protocol):
    """slurmctld's jobs, from one structured listing (``SlurmCtl.jobs``)."""

    def jobs(self) -> Mapping[int, JobInfo]:
        """Every job slurmctld holds, by id."""


class Answers(Protocol):
    """What the launcher left for a run's batch step."""

    def run_answered(self, run: RunKey) -> bool:
        """A handoff or a refusal exists for the run."""


class Backlog(Protocol):
    """The submit folder as the watcher publishes it."""

    def waiting(self, older_than_s: float) -> list[FileDetected]:
        """Events for the job files that have been in ``submit/`` longer than the bound."""


@dataclass(frozen=True)
class Bounds:
    """How long a difference may last before it is repaired."""

    relaunch_after_s: float = 30.0
    """A running job's launcher answer normally comes in under a second."""
    stale_file_after_s: float = 300.0
    """A file's answer normally comes in under a second; a retried one within minutes."""


@dataclass(frozen=True)
class Report:
    """What one reconcile did, for logs and tests."""

    finished: tuple[Finished, ...] = ()
    relaunched: tuple[RunKey, ...] = ()
    republished: tuple[str, ...] = ()


def started_epoch(job: JobInfo) -> float | None:
    """The job's start as epoch seconds (``JobInfo.start`` is UTC ISO), None if unknown."""
    try:
        return datetime.strptime(job.start, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def waiting_for_launcher(job: JobInfo, now: float, bound_s: float) -> bool:
    """A slurm-k8s job running for longer than the bound (pure; the answer is checked after)."""
    if job.state != "RUNNING" or not job.admin_comment.startswith(ACCEPTED_MARK):
        return False
    if job.uid <= 0 or not job.node:
        return False
    started = started_epoch(job)
    return started is not None and now - started >= bound_s


def job_started_of(job: JobInfo) -> JobStarted:
    """The prolog's event for the job's current run, from slurmctld's structured record."""
    return JobStarted(
        job_id=job.job_id,
        restart_count=job.restarts,
        node=job.node,
        user=job.user,
        uid=job.uid,
        gid=job.gid,
        partition=job.partition,
        gpus=job.gpu_indices,
    )


@dataclass
class Reconciler:
    """Compares the three views and repairs the difference; one ``reconcile`` at a time.

    Args:
        collector: finishes runs (its lock keeps a sweep and the queue handler apart).
        slurm: slurmctld's jobs.
        answers: the launcher's handoff and refusal files.
        backlog: the submit folder.
        publish: sends an envelope (``Publisher.publish``).
        bounds: how long a difference may last.
        clock: wall-clock seconds (Slurm's times are wall-clock).
    """

    collector: Collector
    slurm: JobList
    answers: Answers
    backlog: Backlog
    publish: Callable[[Envelope], None]
    bounds: Bounds = field(default_factory=Bounds)
    clock: Callable[[], float] = time.time
    _relaunched: dict[RunKey, float] = field(default_factory=dict, init=False)
    _republished: dict[str, float] = field(default_factory=dict, init=False)

    def reconcile(self) -> Report:
        """One pass over all three views; a view that cannot be read is skipped, not guessed."""
        finished = _step("kubernetes", self.collector.reconcile)
        relaunched = _step("slurm", self._relaunch)
        republished = _step("nas", self._republish)
        report = Report(tuple(finished), tuple(relaunched), tuple(republished))
        done = [r.run.name for r in report.finished if r.done]
        if done or relaunched or republished:
            _log.info(
                "reconcile repaired",
                cleaned=done,
                relaunched=[r.name for r in relaunched],
                republished=republished,
            )
        return report

    def _relaunch(self) -> list[RunKey]:
        now = self.clock()
        bound = self.bounds.relaunch_after_s
        due: list[RunKey] = []
        for job in self.slurm.jobs().values():
            run = RunKey(job.job_id, job.restarts)
            if not waiting_for_launcher(job, now, bound) or not _due(
                self._relaunched, run, now, bound
            ):
                continue
            if self.answers.run_answered(run):
                continue
            self.publish(Envelope.wrap(job_started_of(job)))
            self._relaunched[run] = now
            due.append(run)
            _log.warning(
                "running job without the launcher's answer: job.started published again",
                job_id=job.job_id,
                restart_count=job.restarts,
                started=job.start,
            )
        _prune(self._relaunched, now, bound)
        return due

    def _republish(self) -> list[str]:
        now = self.clock()
        bound = self.bounds.stale_file_after_s
        sent: list[str] = []
        for event in self.backlog.waiting(bound):
            key = f"{event.path}\0{event.sha256}"
            if not _due(self._republished, key, now, bound):
                continue
            self.publish(Envelope.wrap(event))
            self._republished[key] = now
            sent.append(event.path)
            _log.warning(
                "file waiting without an answer: file.detected published again",
                path=event.path,
                owner_uid=event.owner_uid,
            )
        _prune(self._republished, now, bound)
        return sent


def _step(view: str, step: Callable[[], list[T]]) -> list[T]:
    """One view's repairs; a view that cannot be read changes nothing this time."""
    try:
        return step()
    except ServiceError as exc:
        _log.warning("reconcile step skipped", view=view, error=str(exc))
        return []


def _due(last: Mapping[K, float], key: K, now: float, bound_s: float) -> bool:
    """Whether a repair of ``key`` is due (never done, or done longer than the bound ago)."""
    done = last.get(key)
    return done is None or now - done >= bound_s


def _prune(last: dict[K, float], now: float, bound_s: float) -> None:
    """Forget repairs older than twice the bound (their difference is gone or due again)."""
    stale: Iterable[K] = [k for k, at in last.items() if now - at >= 2 * bound_s]
    for key in stale:
        del last[key]
