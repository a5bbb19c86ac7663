"""The one observer of the jobs' Pods: keeps each running job's AdminComment in step with its Pod.

Every few seconds the collector lists the jobs namespace's labelled Pods (one list call for
all runs, cheaper and simpler to make robust than a watch) and, for each run whose note
changed, records ``pod_note`` on the job (looked up by its own query, or in one listing when
many changed at once), so ``scontrol show job`` tells the story while it unfolds: Pending,
ErrImagePull, Running, Failed reason=OOMKilled. A Pod that
ended, or will never start, is handed once to the collector's ``note_pod_finished``, which
records the reason in the job's comment while Slurm still accepts updates (cleanup waits for
the epilog or the reconcile). Only the current run of a job that slurmctld shows running is
noted; a finished job is never touched (slurmctld refuses it anyway).

It lived in the launcher until issue 9: two sweeps (the launcher's and the collector's) wrote
the AdminComment with different texts. The collector owns a run's outcome, so it observes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from shared.errors import PermanentError, ServiceError
from shared.logs import get_logger
from shared.messages import PodFinished
from shared.podfacts import PodFacts
from shared.slurmctl import JobStatus

_log = get_logger(__name__)

NEVER_STARTS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Waiting reasons after which the runner gives up on the Pod (it may retry a pull briefly)."""


@dataclass(frozen=True)
class PodSeen:
    """A labelled Pod and the run it belongs to."""

    job_id: int
    restart_count: int
    facts: PodFacts
    node_ready: bool | None = None
    """The Pod's node's Ready condition (None: unknown)."""


NODE_NOT_READY = "NodeNotReady"
"""The reason noted for a Pod the kubelet has not picked up because its node is not Ready;
the runner uses the same word when it gives up waiting and requeues the job."""


def with_node(seen: PodSeen) -> PodFacts:
    """The Pod's facts, with ``NodeNotReady`` as the reason of a Pod stuck on such a node."""
    facts = seen.facts
    if seen.node_ready is False and not facts.reason and not facts.started_at:
        return replace(facts, reason=NODE_NOT_READY, message=f"node {facts.node} is not Ready")
    return facts


def pod_note(facts: PodFacts) -> str:
    """The job's AdminComment for its Pod: ``pod=<ns>/<name> phase=<phase>[ reason=…][ exit=…]``.

    The one text the observer and the collector's finish write (the launcher's note at launch
    is this text for a new Pod), so a later writer never replaces a reason with a shorter note.
    """
    note = f"pod={facts.namespace}/{facts.name} phase={facts.phase or 'Unknown'}"
    if facts.reason and facts.reason != "Completed":
        note += f" reason={facts.reason}"
    if facts.exit_code is not None:
        note += f" exit={facts.exit_code}"
    return note


def finished_event(seen: PodSeen) -> PodFinished | None:
    """The pod.finished to publish, if the Pod ended or will never start."""
    facts = seen.facts
    ended = facts.phase in ("Succeeded", "Failed") or facts.terminated
    if not ended and facts.reason not in NEVER_STARTS:
        return None
    return PodFinished(
        job_id=seen.job_id,
        restart_count=seen.restart_count,
        namespace=facts.namespace,
        pod_name=facts.name,
        phase=facts.phase or "Unknown",
        exit_code=facts.exit_code,
        reason=" ".join(f"{facts.reason}: {facts.message}".split())[:300]
        if facts.message
        else facts.reason,
    )


class PodLister(Protocol):
    """The labelled Pods of the jobs namespace."""

    def pods(self) -> list[PodSeen]:
        """Every labelled Pod with its run."""


class JobNotes(Protocol):
    """Slurm as the observer needs it."""

    def job_status(self, job_id: int) -> JobStatus | None:
        """One job's record (None when slurmctld does not know it)."""

    def jobs(self) -> Mapping[int, JobStatus]:
        """Every job slurmctld holds, by id."""

    def note(self, job: JobStatus, text: str) -> None:
        """Record text in the job's AdminComment (keeping the acceptance mark)."""


LIST_ABOVE = 8
"""More runs changed in one sweep than this are looked up in one listing of every job; fewer,
each by its own query (8 ms at any queue length, where 22.05's listing takes 0.3 s with 1,000
jobs held and 1.7 s with 7,000)."""


class PodObserver:
    """One sweep at a time: note changes on jobs and hand over ends.

    Args:
        lister: the labelled Pods.
        slurm: job lookups and AdminComment updates.
        ended: takes a Pod's end (``Collector.note_pod_finished``).
    """

    def __init__(
        self, lister: PodLister, slurm: JobNotes, ended: Callable[[PodFinished], None]
    ) -> None:
        self._lister = lister
        self._slurm = slurm
        self._ended = ended
        self._noted: dict[str, str] = {}
        self._reported: set[str] = set()

    def sweep(self) -> None:
        """Look at every Pod once; failures are logged and retried on the next sweep."""
        seen = self._lister.pods()
        changed = [pod for pod in seen if self._changed(pod)]
        jobs: Mapping[int, JobStatus] | None = None
        for pod in changed:
            try:
                if len(changed) > LIST_ABOVE:
                    jobs = self._slurm.jobs() if jobs is None else jobs
                    self._one(pod, jobs.get(pod.job_id))
                else:
                    self._one(pod, self._slurm.job_status(pod.job_id))
            except ServiceError as exc:
                _log.warning("pod note skipped", pod=pod.facts.name, error=str(exc))
        self._forget({p.facts.name for p in seen})

    def _changed(self, pod: PodSeen) -> bool:
        name = pod.facts.name
        return self._noted.get(name) != pod_note(with_node(pod)) or (
            finished_event(pod) is not None and name not in self._reported
        )

    def _one(self, pod: PodSeen, job: JobStatus | None) -> None:
        note = pod_note(with_node(pod))
        name = pod.facts.name
        event = finished_event(pod)
        current = job is not None and job.restarts == pod.restart_count and job.state == "RUNNING"
        if current and job is not None:
            try:
                self._slurm.note(job, note)
            except PermanentError as exc:
                # The job ended between the listing and the update (slurmctld refuses notes
                # on finished jobs): expected at every Pod's end, not worth a warning.
                _log.debug("pod note refused", pod=name, error=str(exc))
        self._noted[name] = note
        if event is not None and name not in self._reported:
            if current:
                self._ended(event)
            self._reported.add(name)

    def _forget(self, names: Iterable[str]) -> None:
        alive = set(names)
        for name in list(self._noted):
            if name not in alive:
                del self._noted[name]
        self._reported &= alive
