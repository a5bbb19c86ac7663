"""The collector's decisions, free of I/O: Slurm, Kubernetes and files come in as ports.

``Collector.handle`` is the queue handler; ``Collector.reconcile`` is the Kubernetes part of
the periodic sweep (``services.collector.reconciling``). Both funnel into ``finish_run``, which
is idempotent: a redelivered event or a second sweep finds the objects gone, the footer
present and the summary already written, and changes nothing. Across replicas a run is
finished once: ``finish_run`` first claims it (``ClusterPort.claim_run``, a lease on the run's
ServiceAccount); a collector that finds the claim held by another leaves the run alone, and a
claim whose holder died expires, so the reconcile still finishes the run.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from services.collector.observing import pod_note
from shared.errors import PermanentError, ServiceError, TransientError
from shared.jobpods import run_name
from shared.logs import get_logger
from shared.messages import Envelope, JobEnded, PodFinished
from shared.podfacts import PodFacts
from shared.slurmctl import TERMINAL_STATES, admin_note, takes_updates

_log = get_logger(__name__)

FOOTER_MARK = "[slurm-k8s] outcome:"
"""How the runner's last line starts; its presence means the output file is complete."""
HEADER_MARK = "[slurm-k8s]"
"""How the runner's lines start; a file with one was written by a containerised job."""


@dataclass(frozen=True)
class RunKey:
    """One run of a job: a requeue starts run ``restart_count + 1`` with fresh objects."""

    job_id: int
    restart_count: int

    @property
    def name(self) -> str:
        """The run's object name (``job-42-r0``)."""
        return run_name(self.job_id, self.restart_count)


@dataclass(frozen=True)
class SlurmJob:
    """Slurm's view of a job: slurmctld's record merged with accounting."""

    job_id: int
    ctld_state: str = ""
    """JobState from slurmctld; "" when it no longer knows the job."""
    acct_state: str = ""
    """State from slurmdbd (``CANCELLED by …`` reduced to ``CANCELLED``); "" if none."""
    restarts: int | None = None
    """The current run's restart count; None when slurmctld no longer knows the job."""
    exit_code: str = ""
    reason: str = ""
    node: str = ""
    start: str = ""
    end: str = ""
    stdout: str = ""
    user: str = ""
    uid: int | None = None
    gid: int | None = None
    comment: str = ""
    admin_comment: str = ""
    """Read only while the job can still take a note: "" once it is completing or over."""
    gpus: int = 0

    @property
    def state(self) -> str:
        """The most final state known: accounting's once terminal, else slurmctld's."""
        if self.acct_state in TERMINAL_STATES:
            return self.acct_state
        return self.ctld_state or self.acct_state or "UNKNOWN"


class RunStatus(Enum):
    """What Slurm says about one run."""

    FINISHED = "finished"
    """Explicitly over: a later run started, or accounting has a terminal state."""
    ENDING = "ending"
    """slurmctld has a terminal state, accounting has not caught up yet."""
    ACTIVE = "active"
    """Pending, running, completing: leave everything alone."""
    UNKNOWN = "unknown"
    """Slurm does not know the job: never a reason to delete anything on its own."""


def classify(job: SlurmJob | None, restart_count: int) -> RunStatus:
    """Whether Slurm explicitly reports the run finished (pure; the fail-closed rule)."""
    if job is None:
        return RunStatus.UNKNOWN
    if job.restarts is not None and job.restarts > restart_count:
        return RunStatus.FINISHED
    if job.ctld_state and job.ctld_state not in TERMINAL_STATES:
        return RunStatus.ACTIVE
    if job.acct_state in TERMINAL_STATES:
        return RunStatus.FINISHED
    if job.ctld_state in TERMINAL_STATES:
        return RunStatus.ENDING
    return RunStatus.UNKNOWN


def _epilog_running(job: SlurmJob | None) -> bool:
    return job is not None and job.ctld_state == "COMPLETING" and job.acct_state in TERMINAL_STATES


class SlurmPort(Protocol):
    """Slurm as the collector needs it."""

    def job(self, job_id: int) -> SlurmJob | None:
        """Slurm's view, or None if neither slurmctld nor accounting know the job."""

    def update(self, job_id: int, **fields: str) -> None:
        """Set job fields (Comment, AdminComment)."""


class Claim(Enum):
    """Whether this collector may finish a run (``ClusterPort.claim_run``)."""

    CLAIMED = "claimed"
    """This collector holds the run's finish until it deletes the run's objects."""
    HELD = "held"
    """Another collector holds an unexpired claim, or is already deleting the run."""
    NO_ACCOUNT = "no account"
    """The run has no ServiceAccount to claim on: a finish deleted it (its last step), or the
    run was never launched."""


class ClusterPort(Protocol):
    """The jobs namespace as the collector needs it."""

    def claim_run(self, name: str) -> Claim:
        """Claim the run's finish for this collector (atomic across replicas)."""

    def release_run(self, name: str) -> None:
        """Give back this collector's claim (its finish failed); never raises."""

    def pod(self, name: str) -> PodFacts | None:
        """The run's Pod, or None if it is gone."""

    def delete_run(self, name: str, *, every_kind: bool = False, ended: bool = False) -> None:
        """Delete the run's Pod and its ServiceAccount (owner of the rest); gone is fine.

        ``every_kind``: the ConfigMap, Role and RoleBinding too, by name. ``ended``: the
        Pod's container has exited, so nothing is left to stop: no grace period.
        """

    def runs(self) -> list[RunKey]:
        """Runs that still have labelled objects of any kind the launcher makes."""


class FilesPort(Protocol):
    """The job's files on the NAS and the run's handoff credentials."""

    def has_runner_lines(self, output: Path, uid: int) -> bool:
        """The output file (owned by uid) has the runner's header."""

    def complete_output(self, output: Path, uid: int, footer: str) -> bool:
        """Append the footer unless the runner's is there; True if appended."""

    def summary_exists(self, output: Path) -> bool:
        """``<output>.summary.json`` exists."""

    def write_summary(self, output: Path, uid: int, gid: int, content: bytes) -> None:
        """Write (or rewrite) ``<output>.summary.json`` owned by uid:gid."""

    def remove_handoff(self, run: RunKey) -> None:
        """Delete the run's handoff kubeconfig; gone is fine."""


@dataclass(frozen=True)
class Outcome:
    """How a run ended, as told to the user."""

    state: str
    exit_code: int | None
    reason: str
    message: str = ""

    @property
    def succeeded(self) -> bool:
        """Completed with exit code 0."""
        return self.state == "COMPLETED" and self.exit_code in (0, None)


def outcome_of(run: RunKey, job: SlurmJob | None, pod: PodFacts | None) -> Outcome:
    """Combine Slurm's state with the container's exit (the container knows the why)."""
    if job is None:
        state = "UNKNOWN"
    elif job.restarts is not None and job.restarts > run.restart_count:
        state = "REQUEUED"
    else:
        state = job.state
    exit_code: int | None = None
    if pod is not None and pod.exit_code is not None:
        exit_code = pod.exit_code
    elif job is not None and job.exit_code:
        head = job.exit_code.split(":", 1)[0]
        exit_code = int(head) if head.isdigit() else None
    reason = pod.reason if pod is not None and pod.reason else (job.reason if job else "")
    message = pod.message if pod is not None else ""
    return Outcome(state, exit_code, reason, message)


def summary_of(
    run: RunKey, job: SlurmJob | None, pod: PodFacts | None, outcome: Outcome, gpu_ids: str
) -> dict[str, Any]:
    """The summary document (no timestamps of its own: a rewrite gives the same bytes)."""
    return {
        "job_id": run.job_id,
        "restart_count": run.restart_count,
        "user": job.user if job else "",
        "state": outcome.state,
        "exit_code": outcome.exit_code,
        "slurm_exit_code": job.exit_code if job else "",
        "reason": outcome.reason,
        "message": outcome.message,
        "node": (pod.node if pod and pod.node else (job.node if job else "")),
        "pod": f"{pod.namespace}/{pod.name}" if pod else "",
        "image": pod.image if pod else "",
        "image_digest": pod.image_digest if pod else "",
        "started_at": (pod.started_at if pod and pod.started_at else (job.start if job else "")),
        "finished_at": (pod.finished_at if pod and pod.finished_at else (job.end if job else "")),
        "gpus": pod.gpus if pod else (job.gpus if job else 0),
        "gpu_indices": gpu_ids,
        "k8s_script": pod.k8s_script if pod else "",
        "results_dir": pod.results_dir if pod else "",
    }


def encode_summary(summary: dict[str, Any]) -> bytes:
    """Stable JSON bytes (sorted keys, trailing newline)."""
    return (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode()


def footer_of(outcome: Outcome) -> str:
    """The footer the runner would have printed, marked as the collector's."""
    code = "unknown" if outcome.exit_code is None else str(outcome.exit_code)
    reason = f" reason={outcome.reason}" if outcome.reason else ""
    return (
        f"{FOOTER_MARK} {outcome.state} exit_code={code}{reason}"
        " (written by the collector: the job's runner ended before it could)\n"
    )


def comment_with_reason(comment: str, outcome: Outcome) -> str | None:
    """The job comment with ``reason=…`` appended, keeping the validator's key; None if as is."""
    if outcome.succeeded or not outcome.reason or "reason=" in comment:
        return None
    reason = " ".join(f"{outcome.reason}: {outcome.message}".split())[:200]
    if not outcome.message:
        reason = outcome.reason
    return f"{comment}; reason={reason}" if comment else f"reason={reason}"


@dataclass(frozen=True)
class Finished:
    """What ``finish_run`` did, for logs and tests."""

    run: RunKey
    status: RunStatus
    done: bool
    outcome: Outcome | None = None
    notes: tuple[str, ...] = ()


class Collector:
    """The collector's handler and reconcile, over injected ports.

    Args:
        slurm: Slurm's view and job updates.
        cluster: the jobs namespace.
        files: output, summary and handoff files.
    """

    def __init__(
        self,
        slurm: SlurmPort,
        cluster: ClusterPort,
        files: FilesPort,
        on_finished: Callable[[RunKey, Outcome, str | None], None] | None = None,
    ) -> None:
        self._slurm = slurm
        self._cluster = cluster
        self._files = files
        # Told (run, outcome, output path) once a run is cleaned up: the live receipt.
        self._on_finished = on_finished
        # The queue handler and the reconcile thread may reach the same run at once.
        self._lock = threading.Lock()
        # The Kubernetes calls made while Slurm is asked (``finish_run``), one after the other:
        # together they take about as long as Slurm's answer, and every thread that allocates
        # costs the process memory (glibc gives it an arena of its own).
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="collector-ahead")

    def handle(self, envelope: Envelope) -> Sequence[Envelope]:
        """Queue handler: finish runs on ``job.ended``; note Pod outcomes on ``pod.finished``."""
        body = envelope.body
        if isinstance(body, JobEnded):
            self.finish_run(
                RunKey(body.job_id, body.restart_count),
                from_epilog=True,
                uid=body.uid,
                gid=body.gid,
                gpu_ids=body.gpus,
            )
        elif isinstance(body, PodFinished):
            self.note_pod_finished(body)
        return ()

    def note_pod_finished(self, event: PodFinished) -> None:
        """Record the Pod's end on the job early.

        Cleanup waits for the epilog: the runner may still be reading the Pod's log.
        """
        run = RunKey(event.job_id, event.restart_count)
        # The event's reason is "<reason>: <message>"; the note shows the reason alone, as
        # the observer noted it while the Pod ran.
        reason, _, message = event.reason.partition(": ")
        pod = PodFacts(
            event.namespace,
            event.pod_name,
            event.phase,
            exit_code=event.exit_code,
            reason=reason,
            message=message,
        )
        # The observer's thread and the consumer's may both get here; one comment update at
        # a time, so a reason is never appended twice.
        with self._lock:
            job = self._slurm.job(run.job_id)
            if job is None or job.restarts is None or job.restarts != run.restart_count:
                return
            state = "COMPLETED" if event.exit_code == 0 else "FAILED"
            self._record_on_job(run, job, pod, Outcome(state, event.exit_code, event.reason))

    def finish_run(
        self,
        run: RunKey,
        *,
        from_epilog: bool,
        uid: int | None = None,
        gid: int | None = None,
        gpu_ids: str = "",
    ) -> Finished:
        """Complete, summarise, record and clean up one run, if Slurm says it is over.

        The epilog's event is itself evidence that the run ended, so an unknown job is
        finished on it; the reconcile acts only on Slurm's explicit word.

        Raises:
            TransientError: Slurm has not recorded the end yet, or a dependency is down.
        """
        with self._lock:
            job, claiming, reading = self._look_up(run, ahead=from_epilog)
            status = classify(job, run.restart_count)
            if status is RunStatus.ACTIVE and from_epilog and _epilog_running(job):
                # slurmctld says COMPLETING while the epilog that sent this event still runs,
                # but accounting already has the final state: the batch step is over.
                status = RunStatus.FINISHED
            if status is RunStatus.ACTIVE:
                self._unclaim(run, claiming)
                if from_epilog:
                    raise TransientError(
                        f"job {run.job_id} is still {job.ctld_state if job else '?'} in Slurm",
                        delay=2,
                    )
                return Finished(run, status, done=False)
            if not from_epilog and status is not RunStatus.FINISHED:
                return Finished(run, status, done=False)
            claim = claiming.result() if claiming else self._cluster.claim_run(run.name)
            if claim is Claim.HELD:
                # A job.ended delivered twice, or a sweep meeting the epilog's finish: the
                # other collector writes the summary; if it dies, its claim expires and a
                # sweep finishes the run.
                _log.info(
                    "run finish left to another collector",
                    job_id=run.job_id,
                    restart_count=run.restart_count,
                    via="epilog" if from_epilog else "reconcile",
                )
                return Finished(run, status, done=False, notes=("claimed by another collector",))
            if claim is Claim.NO_ACCOUNT:
                # Deleting the account is a finish's last step: without it, a sweep sees the
                # leftovers of a finished run (listed before the delete, or awaiting the
                # garbage collector), and an epilog's event whose run has its summary was
                # finished already. Only a run never launched has neither.
                if not from_epilog:
                    self._cluster.delete_run(run.name, every_kind=True)
                    return Finished(run, status, done=False, notes=("leftovers deleted",))
                if job is not None and job.stdout and self._files.summary_exists(Path(job.stdout)):
                    return Finished(run, status, done=False, notes=("already finished",))
            try:
                pod = reading.result() if reading else self._cluster.pod(run.name)
                return self._finish_claimed(run, job, pod, status, from_epilog, uid, gid, gpu_ids)
            except Exception:
                if claim is Claim.CLAIMED:
                    # Whoever retries (this or another collector) need not wait for expiry.
                    self._cluster.release_run(run.name)
                raise

    def _look_up(
        self, run: RunKey, *, ahead: bool
    ) -> tuple[SlurmJob | None, Future[Claim] | None, Future[PodFacts | None] | None]:
        """Slurm's view of the job; ``ahead``: the run's claim and its Pod asked at once.

        The epilog's event almost always finds the run over, so its claim and Pod are not
        left waiting for Slurm's answer (a claim then not needed is given back).
        """
        if not ahead:
            return self._slurm.job(run.job_id), None, None
        claiming = self._ahead.submit(self._cluster.claim_run, run.name)
        reading = self._ahead.submit(self._cluster.pod, run.name)
        try:
            return self._slurm.job(run.job_id), claiming, reading
        except BaseException:
            self._unclaim(run, claiming)
            raise

    def _unclaim(self, run: RunKey, claiming: Future[Claim] | None) -> None:
        """Give back a claim made ahead for a run that is not finished now."""
        if claiming is None:
            return
        try:
            claimed = claiming.result() is Claim.CLAIMED
        except ServiceError:
            return  # nothing was claimed; the reason, if it lasts, shows on the retry
        if claimed:
            self._cluster.release_run(run.name)

    def _finish_claimed(
        self,
        run: RunKey,
        job: SlurmJob | None,
        pod: PodFacts | None,
        status: RunStatus,
        from_epilog: bool,
        uid: int | None,
        gid: int | None,
        gpu_ids: str,
    ) -> Finished:
        """Files, job record, deletes and receipt of a run this collector may finish."""
        outcome = outcome_of(run, job, pod)
        notes = list(self._write_files(run, job, pod, outcome, uid, gid, gpu_ids))
        notes += self._record_on_job(run, job, pod, outcome)
        self._files.remove_handoff(run)
        if self._on_finished is not None:
            self._on_finished(run, outcome, job.stdout if job else None)
        # Last, because deleting the ServiceAccount ends the claim: a collector that dies
        # before it leaves the run to the next one, whole. The epilog's event follows a run
        # the launcher completed; the reconcile may be looking at the leftovers of one it
        # did not (a crash between two creates).
        self._cluster.delete_run(
            run.name, every_kind=not from_epilog, ended=pod is None or pod.terminated
        )
        _log.info(
            "run finished",
            job_id=run.job_id,
            restart_count=run.restart_count,
            state=outcome.state,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            via="epilog" if from_epilog else "reconcile",
            notes=notes,
        )
        return Finished(run, status, done=True, outcome=outcome, notes=tuple(notes))

    def reconcile(self) -> list[Finished]:
        """Finish every labelled run Slurm reports explicitly finished; leave the rest."""
        results: list[Finished] = []
        for run in self._cluster.runs():
            try:
                results.append(self.finish_run(run, from_epilog=False))
            except ServiceError as exc:
                # One run's trouble must not stop the sweep; it is retried next sweep.
                _log.warning("reconcile skipped a run", run=run.name, error=str(exc))
        return results

    def _write_files(
        self,
        run: RunKey,
        job: SlurmJob | None,
        pod: PodFacts | None,
        outcome: Outcome,
        uid: int | None,
        gid: int | None,
        gpu_ids: str,
    ) -> list[str]:
        if job is None or not job.stdout:
            return ["output path unknown: no footer, no summary"]
        owner = job.uid if job.uid is not None else uid
        group = job.gid if job.gid is not None else gid
        if owner is None or group is None:
            return ["job owner unknown: no footer, no summary"]
        if (uid is not None and uid != owner) or (gid is not None and gid != group):
            # slurmd (the epilog's event) and slurmctld disagree on whose job this is.
            return [f"owner mismatch ({uid}:{gid} vs {owner}:{group}): no footer, no summary"]
        output = Path(job.stdout)
        notes: list[str] = []
        try:
            containerised = pod is not None or self._files.has_runner_lines(output, owner)
            if not containerised:
                return ["not a containerised run: output left alone"]
            if self._files.complete_output(output, owner, footer_of(outcome)):
                notes.append("footer appended")
            # Without the Pod a rewrite would lose the image and container exit: keep the
            # summary written while the Pod still existed.
            if pod is not None or not self._files.summary_exists(output):
                summary = summary_of(run, job, pod, outcome, gpu_ids)
                self._files.write_summary(output, owner, group, encode_summary(summary))
                notes.append("summary written")
        except (PermanentError, OSError) as exc:
            # The user's files are theirs to break; that never blocks freeing the GPUs.
            notes.append(f"files skipped: {exc}")
        return notes

    def _record_on_job(
        self, run: RunKey, job: SlurmJob | None, pod: PodFacts | None, outcome: Outcome
    ) -> list[str]:
        # Only the current run may speak for the job, and only while slurmctld knows it.
        if job is None or job.restarts is None or job.restarts != run.restart_count:
            return []
        if not takes_updates(job.ctld_state):
            # The reason was recorded while the job ran (pod.finished, the runner), or is in
            # the summary.
            return ["job finished: Slurm takes no more comments"]
        fields: dict[str, str] = {}
        comment = comment_with_reason(job.comment, outcome)
        if comment is not None:
            fields["Comment"] = comment
        if pod is not None:
            admin = admin_note(job.admin_comment, pod_note(pod))
            if admin != job.admin_comment:
                fields["AdminComment"] = admin
        if not fields:
            return []
        try:
            self._slurm.update(run.job_id, **fields)
        except PermanentError as exc:
            return [f"job not updated: {exc}"]
        return [f"job updated: {', '.join(sorted(fields))}"]
