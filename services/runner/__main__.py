"""``python -m services.runner``: the batch step of a ``#K8S_IMAGE`` job (see the package doc).

Output, all into the job's ``--output`` (its stdout): header lines starting ``[slurm-k8s]``,
the container's log, and a footer ``[slurm-k8s] outcome: …``. With a separate ``--error``
file the container's stderr goes there when the API can split the streams. Diagnostics of
the runner itself go to stderr. Exit codes: see ``services.runner.outcome``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from services.runner.config import RunnerSettings
from services.runner.following import Follower, Output
from services.runner.outcome import (
    EXIT_CANCELLED,
    EXIT_CANNOT_RUN,
    EXIT_LOST,
    EXIT_OUTPUT_LOST,
    PodJudge,
    Step,
    Verdict,
)
from shared.errors import PermanentError, ServiceError, TransientError
from shared.jobpods import JOB_NAMESPACE, handoff_path, refusal_path, run_name
from shared.podfacts import PodFacts

if TYPE_CHECKING:  # HTTP and TLS load only once the Pod exists
    from services.runner.pod import RunPod

TAG = "[slurm-k8s]"
REFUSED_GRACE_S = 60.0
"""How long a 403 for the run's own Pod is retried (``AccessRefused``) before the runner
concludes the Pod is gone: a restarted API server authorizes within seconds."""
WATCH_S = 60
"""How long one watch of the run's Pod lasts before the next (the API server's timeout)."""
LEFTOVER_S = 30.0
"""How long a failed or refused run's remaining log is copied before the runner leaves."""
ENDING_POLL_S = 0.1
"""Where the run's Role allows no watch: Pod reads around the container's end, after a log
stream ended while the status still says running (the kubelet reports the exit within about
a second, its next relist)."""
ENDING_WINDOW_S = 3.0
"""How long after a stream's end the runner reads that often (a dropped connection ends a
stream too, and must not turn the running poll into ten reads a second)."""


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Patience:
    """How long the runner waits out API trouble: transient errors always, a 403 for a while."""

    def __init__(self) -> None:
        self._trouble = 0
        self._refused_since: float | None = None

    def retry(self, exc: ServiceError, *, refused: bool) -> bool:
        """Whether to read again (said on the job's stderr the first and 30th time)."""
        now = time.monotonic()
        if refused and self._refused_since is None:
            self._refused_since = now
        if self._refused_since is not None and now - self._refused_since >= REFUSED_GRACE_S:
            return False
        self._trouble += 1
        if self._trouble in (1, 30):
            print(f"{TAG} Kubernetes API trouble (retrying): {exc}", file=sys.stderr)
        return True


class Runner:
    """Follows one run's Pod from the batch step.

    Args:
        settings: which run, and the timeouts.
        out: the job's output (stdout).
        err: the job's error stream (stderr), for a split stderr.
        stop: set on SIGTERM.
    """

    def __init__(
        self, settings: RunnerSettings, out: Output, err: Output, stop: threading.Event
    ) -> None:
        self._s = settings
        self._out = out
        self._err = err
        self._stop = stop
        self._name = run_name(settings.job_id, settings.restart_count)
        self._followers: list[Follower] = []
        self._ended = threading.Event()
        self._described = False
        self._wake = threading.Event()
        self._stream_ended = float("-inf")
        self._watcher: threading.Thread | None = None

    def _say(self, text: str) -> None:
        self._out.line(f"{TAG} {text}")

    def _wait_for_handoff(self) -> Path | Verdict | None:
        """The run's kubeconfig, a verdict (refused, unreadable), or None after the timeout."""
        s = self._s
        path = handoff_path(s.state_dir, s.job_id, s.restart_count)
        refused = refusal_path(s.state_dir, s.job_id, s.restart_count)
        deadline = time.monotonic() + s.handoff_timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            reason = _read_small(refused)
            if reason is not None:
                return Verdict(Step.FAIL, EXIT_CANNOT_RUN, "Refused", reason)
            try:
                if path.stat().st_size > 0:
                    with path.open("rb"):
                        return path
            except PermissionError:
                return Verdict(
                    Step.FAIL,
                    EXIT_CANNOT_RUN,
                    "Refused",
                    f"this run's credentials belong to another user than uid {os.getuid()}; "
                    "no Pod is followed",
                )
            except OSError:
                pass
            self._stop.wait(0.2)
        return None

    def run(self) -> int:
        """Follow the Pod to its end; returns the batch step's exit code."""
        s = self._s
        self._say(
            f"job {s.job_id} (restart {s.restart_count}) on node {s.node or '?'}: "
            f"runs in Pod {JOB_NAMESPACE}/{self._name}; step started {_now_iso()}"
        )
        kubeconfig = self._wait_for_handoff()
        if isinstance(kubeconfig, Verdict):
            return self._finish(kubeconfig)
        if kubeconfig is None:
            if self._stop.is_set():
                return self._finish(Verdict(Step.FAIL, EXIT_CANCELLED, "Cancelled"))
            return self._finish(
                Verdict(
                    Step.FAIL,
                    EXIT_LOST,
                    "NoPod",
                    f"the launcher did not create the Pod within {s.handoff_timeout_s:.0f} s",
                )
            )
        from services.runner.pod import RunPod

        try:
            pod = RunPod(kubeconfig, self._name)
        except PermanentError as exc:
            return self._finish(Verdict(Step.FAIL, EXIT_LOST, "NoPod", str(exc)))
        try:
            return self._follow(pod)
        finally:
            pod.close()

    def _follow(self, pod: RunPod) -> int:
        from services.runner.pod import AccessRefused

        judge = PodJudge(self._s.pull_grace_s, self._s.start_timeout_s)
        waiting_said = ""
        patience = _Patience()
        while True:
            if self._stop.is_set():
                return self._cancel(pod)
            try:
                facts = pod.read()
            except (TransientError, AccessRefused) as exc:
                if patience.retry(exc, refused=isinstance(exc, AccessRefused)):
                    self._stop.wait(2.0)
                    continue
                facts = None
                print(f"{TAG} cannot read the Pod: {exc}", file=sys.stderr)
            except PermanentError as exc:
                # The Pod-bound token stops working when the Pod is deleted.
                facts = None
                print(f"{TAG} cannot read the Pod: {exc}", file=sys.stderr)
            patience = _Patience()
            if facts is not None:
                self._describe(facts)
                self._start_watching(pod)
            verdict = judge.observe(facts, time.monotonic())
            if verdict.step is Step.WAIT and verdict.reason and verdict.reason != waiting_said:
                waiting_said = verdict.reason
                detail = f": {verdict.message}" if verdict.message else ""
                self._say(f"waiting: {verdict.reason}{detail}")
            if verdict.step in (Step.RUNNING, Step.FINISHED) and facts is not None:
                self._start_following(pod, facts)
            if verdict.step is Step.FINISHED:
                self._ended.set()
                unread = self._copy_to_the_end(pod)
                self._release(pod)
                return self._finish(verdict, unread)
            if verdict.step in (Step.FAIL, Step.REQUEUE):
                self._ended.set()
                if facts is not None:
                    self._await_note(verdict.reason)
                    pod.delete(0)
                self._drain(LEFTOVER_S)
                return self._finish(verdict)
            running = verdict.step is Step.RUNNING and facts is not None
            self._pause(
                self._next_look(
                    running, ended=facts is not None and facts.terminated, watched=pod.watchable
                )
            )

    def _release(self, pod: RunPod) -> None:
        """Delete the ended container's Pod (no grace: nothing runs), its log copied.

        The kubelet counts a Pod's CPUs, memory and GPUs for admission until its phase turns
        terminal, about a second after the container's exit; a deleted Pod it forgets at once,
        so the next job Slurm puts on these resources is admitted. The collector still has
        the Pod's last state for the summary (its watch), and deletes whatever is left.
        """
        try:
            pod.delete(0)
        except PermanentError:
            pass  # the Pod-bound token stops working once the Pod is gone
        except ServiceError as exc:
            print(
                f"{TAG} could not delete the ended Pod (the collector will): {exc}", file=sys.stderr
            )

    def _next_look(self, running: bool, *, ended: bool = False, watched: bool = False) -> float:
        """Seconds until the next Pod read: rarely while it runs, often around its end.

        A watched Pod wakes the runner when it changes, so its end needs no frequent reads.
        """
        ending = ended or time.monotonic() - self._stream_ended < ENDING_WINDOW_S
        if running and ending and not watched:
            return ENDING_POLL_S
        return self._s.running_poll_s if running else self._s.poll_s

    def _start_watching(self, pod: RunPod) -> None:
        """Start ``_watch`` once the Pod was read (a watch starts from its version)."""
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch, args=(pod,), name="pod-watch", daemon=True
            )
            self._watcher.start()

    def _watch(self, pod: RunPod) -> None:
        """Wake the runner whenever its Pod changes (a thread, until the container ended)."""
        while pod.watchable and not self._ended.is_set() and not self._stop.is_set():
            try:
                changed = pod.await_change(WATCH_S)
            except ServiceError:
                # Reads go on meanwhile; their trouble is the one reported.
                self._ended.wait(2.0)
                continue
            if changed:
                self._wake.set()

    def _on_stream_end(self) -> None:
        """A log stream ended: the container probably stopped; look now and soon again."""
        self._stream_ended = time.monotonic()
        self._wake.set()

    def _pause(self, seconds: float) -> None:
        """Sleep until the next look at the Pod, a log stream's end or SIGTERM."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._wake.wait(min(left, 0.25)):
                self._wake.clear()
                return

    def _await_note(self, reason: str, timeout_s: float = 8.0) -> None:
        """Give the collector's Pod observer a moment to record the reason on the job.

        Deleting the Pod erases its status, and the runner (the job's user) cannot write the
        AdminComment itself; ``scontrol show job`` of one's own job is allowed, so wait
        (bounded) until the note carries the reason.
        """
        from shared.slurmctl import SlurmCtl

        deadline = time.monotonic() + timeout_s
        ctl = SlurmCtl(timeout_s=5)
        while time.monotonic() < deadline and not self._stop.is_set():
            try:
                job = ctl.job_status(self._s.job_id)
            except ServiceError:
                return
            if job is None or f"reason={reason}" in job.admin_comment:
                return
            self._stop.wait(1.0)

    def _describe(self, facts: PodFacts) -> None:
        if not self._described:
            self._say(f"pod {facts.namespace}/{facts.name} image {facts.image}")
            self._described = True

    def _start_following(self, pod: RunPod, facts: PodFacts) -> None:
        if self._followers:
            return
        self._describe(facts)
        digest = facts.image_digest or "unknown"
        self._say(f"container started {facts.started_at or '?'}; image digest {digest}")
        split = self._s.split_streams and self._separate_error_file()
        streams: list[tuple[str | None, Output]] = (
            [("Stdout", self._out), ("Stderr", self._err)] if split else [(None, self._out)]
        )
        for stream, out in streams:

            def open_log(
                follow: bool, since: str | None, stream: str | None = stream
            ) -> Iterable[bytes]:
                return pod.open_log(follow, since, stream)

            follower = Follower(open_log, out, self._ended, on_stream_end=self._on_stream_end)
            thread = threading.Thread(target=follower.run, name=f"log-{stream}", daemon=True)
            thread.start()
            self._followers.append(follower)

    def _separate_error_file(self) -> bool:
        try:
            return not os.path.samefile("/proc/self/fd/1", "/proc/self/fd/2")
        except OSError:
            return False

    def _copy_to_the_end(self, pod: RunPod) -> str | None:
        """Copy the ended container's log whole; why not, if it was not.

        The follow streams are cut (the kubelet would end them only at its next check, up to
        a second later, and a follow stream is several times slower than a plain read, which
        matters when the job printed much in its last seconds) and each follower reads the
        rest in one plain read. No deadline: every read has its own timeout (``LOG_TIMEOUT``).
        """
        pod.cut_follows()
        while True:
            copying = [f for f in self._followers if not f.done.is_set()]
            if not copying:
                break
            if self._stop.is_set():
                return "was not copied whole (Slurm ended the job while its log was being copied)"
            copying[0].done.wait(1.0)
        errors = [error for f in self._followers if not f.complete for error in f.errors]
        if errors:
            return f"could not be copied whole from the container's log ({errors[-1]})"
        return None

    def _drain(self, timeout_s: float) -> None:
        """Copy what is left of the log for a little while (the run failed or was cancelled)."""
        deadline = time.monotonic() + timeout_s
        for follower in self._followers:
            follower.done.wait(max(0.0, deadline - time.monotonic()))

    def _cancel(self, pod: RunPod) -> int:
        """Delete the Pod and wait until it is gone (bounded by KillWait).

        The container gets SIGTERM, then SIGKILL after the grace; its log is copied until
        it stops, so what its SIGTERM handler prints lands in the output too.
        """
        deadline = time.monotonic() + self._s.gone_timeout_s
        try:
            facts = pod.read()
            if facts is not None and (facts.phase == "Running" or facts.started_at):
                self._start_following(pod, facts)
            pod.delete(self._s.delete_grace_s)
            while time.monotonic() < deadline and pod.read() is not None:
                time.sleep(0.5)
        except PermanentError:
            # The Pod-bound token stops working once the Pod is gone.
            pass
        except ServiceError as exc:
            print(f"{TAG} could not delete the Pod: {exc}", file=sys.stderr)
        self._ended.set()
        self._drain(3.0)
        self._out.line(
            f"{TAG} outcome: cancelled exit={EXIT_CANCELLED} (Slurm ended the job: scancel, "
            "time limit or requeue; Pod deleted)"
        )
        return EXIT_CANCELLED

    def _finish(self, verdict: Verdict, unread: str | None = None) -> int:
        """Print the footer; the batch step's exit code.

        Args:
            verdict: how the container ended.
            unread: why the container's log could not be copied whole, if it could not.
        """
        self._out.line(verdict.footer)
        written = self._out.lost or self._err.lost
        lost = f"could not be written ({written})" if written is not None else unread
        if lost is not None:
            # The job's result is incomplete: it fails, whatever the container said. The
            # reason goes to stderr (the --error file when that one is still writable).
            self._err.line(
                f"{TAG} outcome: Failed exit={EXIT_OUTPUT_LOST} reason=OutputLost: the job's "
                f"output {lost}; the container's own outcome: "
                f"{verdict.footer.removeprefix(f'{TAG} outcome: ')}"
            )
            return EXIT_OUTPUT_LOST
        return verdict.exit_code if verdict.exit_code is not None else 1


def _read_small(path: Path, limit: int = 4096) -> str | None:
    """A short text file's content, or None if it is not there (or not readable)."""
    try:
        with path.open("rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace").strip()
    except OSError:
        return None


def main() -> int:
    """Entry point of the batch step."""
    stop = threading.Event()

    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    out = Output(sys.stdout.buffer)
    try:
        settings = RunnerSettings.from_env()
    except ValueError as exc:
        out.line(f"{TAG} outcome: Failed exit={EXIT_LOST} reason=NotASlurmJob: {exc}")
        return EXIT_LOST
    return Runner(settings, out, Output(sys.stderr.buffer), stop).run()


if __name__ == "__main__":
    code = main()
    # The job's end waits for this process to be gone (slurmstepd, then the epilog), and the
    # interpreter's teardown took about 20 ms of it on the lab: every line is written and
    # flushed by now (Output flushes each write), and nothing else needs finalizing.
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError):  # a full NAS: the exit code already says so (74)
            stream.flush()
    os._exit(code)
