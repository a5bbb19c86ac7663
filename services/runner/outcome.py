"""How the runner judges its Pod, one observation at a time (pure; time is passed in).

The batch step must end exactly when the Pod's container has ended, with its exit code, or
as soon as it is clear the container will never run. The exit codes the runner chooses
itself follow Docker's convention where one exists:

- the container's own exit code when it ran (137 for OOMKilled, as the kernel's SIGKILL);
- ``EXIT_CANNOT_RUN`` (125): the image could not be pulled or the container not created;
- ``EXIT_LOST`` (126): the Pod vanished, or the launcher never handed it over;
- ``EXIT_OUTPUT_LOST`` (74, sysexits' ``EX_IOERR``): the job's output could not be written
  (the NAS is full or gone), whatever the container's own result;
- ``EXIT_CANCELLED`` (143 = 128 + SIGTERM): Slurm ended the job (scancel, time limit, requeue);
- ``REQUEUE_EXIT`` (218, listed in slurm.conf's ``RequeueExit``): Kubernetes refused the Pod
  on this node (kubelet admission: resources held outside Slurm) or the node never started
  it; Slurm requeues the job, and the next run gets fresh objects. A script that itself
  exits 218 is requeued too: that is what RequeueExit means, and 218 is otherwise unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from shared.podfacts import PodFacts

EXIT_OUTPUT_LOST = 74
EXIT_CANNOT_RUN = 125
EXIT_LOST = 126
EXIT_CANCELLED = 143
REQUEUE_EXIT = 218

PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff"})
"""Retried by the kubelet with backoff; given up after a short grace (or at once if the
registry says the image does not exist)."""
CANNOT_RUN = frozenset(
    {
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Container creation failures; a brief grace covers a kubelet racing its own caches."""
NOT_FOUND_HINTS = ("not found", "manifest unknown", "name unknown", "404")


def outgrew_scratch(facts: PodFacts) -> bool:
    """Evicted for writing more than the scratch limit: the job's doing, not the node's."""
    return facts.reason == "Evicted" and (
        "EmptyDir volume" in facts.message or "ephemeral storage" in facts.message
    )


class Step(Enum):
    """What to do after an observation."""

    WAIT = "wait"
    """Not running yet: keep looking."""
    RUNNING = "running"
    """The container runs: follow its log."""
    FINISHED = "finished"
    """The container ended: copy the rest of its log, delete the Pod, exit with its code."""
    FAIL = "fail"
    """It will never run: delete the Pod, exit with ``exit_code``."""
    REQUEUE = "requeue"
    """Kubernetes refused it on this node: delete the Pod, exit ``REQUEUE_EXIT``."""


@dataclass(frozen=True)
class Verdict:
    """One judgement of the Pod."""

    step: Step
    exit_code: int | None = None
    reason: str = ""
    message: str = ""

    @property
    def footer(self) -> str:
        """``[slurm-k8s] outcome: …`` for the job's output."""
        if self.step is Step.FINISHED:
            state = "Succeeded" if self.exit_code == 0 else "Failed"
        elif self.step is Step.REQUEUE:
            state = "Requeued"
        else:
            state = "Failed"
        text = f"[slurm-k8s] outcome: {state} exit={self.exit_code}"
        if self.reason and not (self.step is Step.FINISHED and self.exit_code == 0):
            text += f" reason={self.reason}"
            if self.message:
                text += ": " + " ".join(self.message.split())[:500]
        return text


class PodJudge:
    """Turns successive observations of the Pod into verdicts.

    Args:
        pull_grace_s: how long an image pull may keep failing before the job fails.
        start_timeout_s: how long the kubelet may take to acknowledge the Pod at all
            (a NotReady node never does).

    A container that ended is final at once (the runner then deletes its Pod): waiting for
    the Pod's phase to turn terminal would cost a second of the kubelet's, with nothing left
    to run.
    """

    def __init__(self, pull_grace_s: float = 20.0, start_timeout_s: float = 180.0) -> None:
        self._pull_grace_s = pull_grace_s
        self._start_timeout_s = start_timeout_s
        self._first_seen: float | None = None
        self._failing_since: float | None = None
        self.seen = False

    def observe(self, facts: PodFacts | None, now: float) -> Verdict:
        """Judge the Pod as it is now (None: it does not exist)."""
        if self._first_seen is None:
            self._first_seen = now
        if facts is None:
            return Verdict(
                Step.FAIL,
                EXIT_LOST,
                "PodDeleted",
                "the job's Pod was deleted outside Slurm" if self.seen else "no Pod",
            )
        self.seen = True
        if facts.terminated:
            return self._ended(facts)
        if facts.phase == "Succeeded":
            return Verdict(Step.FINISHED, 0, facts.reason or "Completed")
        if facts.phase == "Failed":
            if facts.reason == "DeadlineExceeded" or outgrew_scratch(facts):
                return Verdict(Step.FAIL, 1, facts.reason, facts.message)
            # Admission refusals (OutOfnvidia.com/gpu, UnexpectedAdmissionError, …) and
            # evictions: the node could not honour what Slurm allocated.
            return Verdict(Step.REQUEUE, REQUEUE_EXIT, facts.reason or "Failed", facts.message)
        if facts.phase == "Running" or facts.started_at:
            return Verdict(Step.RUNNING)
        return self._waiting(facts, now)

    def _ended(self, facts: PodFacts) -> Verdict:
        reason = facts.reason or ("Completed" if facts.exit_code == 0 else "Error")
        message = facts.message if reason == "OOMKilled" else ""
        return Verdict(Step.FINISHED, facts.exit_code, reason, message)

    def _waiting(self, facts: PodFacts, now: float) -> Verdict:
        if facts.reason in PULL_FAILURES or facts.reason in CANNOT_RUN:
            if self._failing_since is None:
                self._failing_since = now
            lowered = facts.message.lower()
            missing = facts.reason in PULL_FAILURES and any(h in lowered for h in NOT_FOUND_HINTS)
            grace = self._pull_grace_s if facts.reason in PULL_FAILURES else 5.0
            if missing or facts.reason == "InvalidImageName" or now - self._failing_since >= grace:
                return Verdict(Step.FAIL, EXIT_CANNOT_RUN, facts.reason, facts.message)
            return Verdict(Step.WAIT, reason=facts.reason, message=facts.message)
        self._failing_since = None
        first = self._first_seen if self._first_seen is not None else now
        if not facts.reason and now - first >= self._start_timeout_s:
            return Verdict(
                Step.REQUEUE,
                REQUEUE_EXIT,
                "NodeNotReady",
                f"the kubelet on {facts.node or 'the node'} did not start the Pod within "
                f"{self._start_timeout_s:.0f} s (node not ready?)",
            )
        return Verdict(Step.WAIT, reason=facts.reason)
