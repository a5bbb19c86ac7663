import io
import os
import threading
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.runner import __main__ as runner_main
from services.runner.__main__ import ENDING_POLL_S, Runner
from services.runner.config import RunnerSettings
from services.runner.following import Output
from services.runner.pod import AccessRefused
from shared.errors import TransientError
from shared.jobpods import handoff_path
from shared.podfacts import PodFacts

pytestmark = pytest.mark.unit

RUNNING = PodFacts(
    "slurm-jobs",
    "job-7-r0",
    "Running",
    image="alpine",
    image_id="alpine@sha256:abc",
    started_at="2026-01-01T00:00:00+00:00",
)
DONE = replace(RUNNING, phase="Succeeded", exit_code=0, reason="Completed")


class FakePod:
    watchable = False  # as with a Role without watch: the runner polls

    def __init__(self, states: list[PodFacts | None]) -> None:
        self.states = states
        self.deleted: list[int] = []

    def read(self) -> PodFacts | None:
        if self.deleted:
            return None
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def delete(self, grace_s: int) -> None:
        self.deleted.append(grace_s)

    def cut_follows(self) -> None:
        pass

    def open_log(self, follow: bool, since_time: str | None, stream: str | None) -> Iterable[bytes]:
        return [b"2026-01-01T00:00:01.1Z Hello from Slurm-K8s!\n"]


def make(tmp_path: Path, stop: threading.Event | None = None) -> tuple[Runner, io.BytesIO]:
    settings = RunnerSettings(job_id=7, nas_root=tmp_path, poll_s=0.01)
    buf = io.BytesIO()
    return Runner(settings, Output(buf), Output(io.BytesIO()), stop or threading.Event()), buf


def test_follows_to_the_end_with_header_log_and_footer(tmp_path: Path) -> None:
    runner, buf = make(tmp_path)
    code = runner._follow(FakePod([RUNNING, RUNNING, DONE]))  # type: ignore[arg-type]
    text = buf.getvalue().decode()
    assert code == 0
    assert "[slurm-k8s] pod slurm-jobs/job-7-r0 image alpine" in text
    assert "image digest sha256:abc" in text
    assert "Hello from Slurm-K8s!\n" in text
    assert text.endswith("[slurm-k8s] outcome: Succeeded exit=0\n")


def test_the_pod_is_deleted_once_its_container_ended_without_waiting_for_its_phase(
    tmp_path: Path,
) -> None:
    runner, buf = make(tmp_path)
    ended = replace(RUNNING, exit_code=3, reason="Error")  # the phase still says Running
    pod = FakePod([RUNNING, ended])
    assert runner._follow(pod) == 3  # type: ignore[arg-type]
    assert pod.deleted == [0]  # nothing runs any more: no grace period
    text = buf.getvalue().decode()
    assert text.index("Hello from Slurm-K8s!") < text.index("outcome: Failed exit=3")


def test_sigterm_deletes_the_pod_and_exits_143(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    runner, buf = make(tmp_path, stop)
    pod = FakePod([RUNNING])
    assert runner._follow(pod) == 143  # type: ignore[arg-type]
    assert pod.deleted == [10]
    text = buf.getvalue().decode()
    assert "Hello from Slurm-K8s!" in text  # the log is copied up to the end
    assert text.rstrip().endswith(
        "(Slurm ended the job: scancel, time limit or requeue; Pod deleted)"
    )


def test_pull_failure_deletes_the_pod_and_exits_125(tmp_path: Path, monkeypatch: Any) -> None:
    runner, buf = make(tmp_path)
    # Not Slurm's job 7 of whatever lab this runs beside (its note would be waited for).
    monkeypatch.setattr(runner, "_await_note", lambda reason: None)
    pull = replace(
        RUNNING, phase="Pending", started_at="", reason="ErrImagePull", message="not found"
    )
    pod = FakePod([pull])
    assert runner._follow(pod) == 125  # type: ignore[arg-type]
    assert pod.deleted == [0]
    assert "outcome: Failed exit=125 reason=ErrImagePull: not found" in buf.getvalue().decode()


def test_waits_for_the_handoff(tmp_path: Path, monkeypatch: Any) -> None:
    runner, _ = make(tmp_path)
    path = handoff_path(tmp_path / "slurm-jobs" / ".state", 7, 0)
    path.parent.mkdir(parents=True)
    threading.Timer(0.3, lambda: path.write_text("{}")).start()
    assert runner._wait_for_handoff() == path
    assert os.path.exists(path)


def test_after_a_log_stream_ends_the_pod_is_read_again_soon_not_at_the_running_poll(
    tmp_path: Path,
) -> None:
    runner, _ = make(tmp_path)
    running_poll = runner._s.running_poll_s
    assert runner._next_look(running=True) == running_poll
    assert runner._next_look(running=False) == 0.01
    # The kubelet has said the container ended: look again soon.
    assert runner._next_look(running=True, ended=True) == ENDING_POLL_S
    runner._on_stream_end()
    assert runner._wake.is_set()
    assert runner._next_look(running=True) == ENDING_POLL_S < running_poll


class WatchedPod(FakePod):
    """A Pod whose watch reports one change (the container's end), then nothing more."""

    watchable = True

    def __init__(self, states: list[PodFacts | None]) -> None:
        super().__init__(states)
        self.watches = 0
        self.quiet = threading.Event()

    def await_change(self, within_s: int) -> bool:
        self.watches += 1
        if self.watches == 1:
            return True
        self.quiet.wait(within_s)
        return False


def test_a_change_the_watch_reports_is_read_at_once_not_at_the_running_poll(
    tmp_path: Path,
) -> None:
    settings = RunnerSettings(job_id=7, nas_root=tmp_path, running_poll_s=3600)
    runner = Runner(settings, Output(io.BytesIO()), Output(io.BytesIO()), threading.Event())
    pod = WatchedPod([RUNNING, DONE])
    try:
        # Without the watch's wake-up this would wait an hour (and time out).
        assert runner._follow(pod) == 0  # type: ignore[arg-type]
    finally:
        pod.quiet.set()
    assert pod.deleted == [0]
    # Watched, the end of a log stream no longer brings frequent reads.
    runner._on_stream_end()
    assert runner._next_look(running=True, watched=True) == 3600


class FullDisk(io.BytesIO):
    """A stream on a filesystem that is full after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_output_that_cannot_be_written_fails_the_job_with_the_reason(tmp_path: Path) -> None:
    settings = RunnerSettings(job_id=7, nas_root=tmp_path, poll_s=0.01)
    out, err = Output(FullDisk(room=120)), Output(io.BytesIO())
    runner = Runner(settings, out, err, threading.Event())
    code = runner._follow(FakePod([RUNNING, RUNNING, DONE]))  # type: ignore[arg-type]
    assert code == 74  # EX_IOERR, whatever the container's exit code (0 here)
    assert out.lost == "No space left on device"
    said = err._stream.getvalue().decode()  # type: ignore[attr-defined]
    assert said.endswith(
        "[slurm-k8s] outcome: Failed exit=74 reason=OutputLost: the job's output could not be "
        "written (No space left on device); the container's own outcome: Succeeded exit=0\n"
    )


class UnreadablePod(FakePod):
    """The log's last read (after the container's end) fails: its tail is not copied."""

    def open_log(self, follow: bool, since_time: str | None, stream: str | None) -> Iterable[bytes]:
        if not follow:
            raise TransientError("connection reset by peer")
        return super().open_log(follow, since_time, stream)


def test_a_log_that_could_not_be_copied_whole_fails_the_job_with_the_reason(
    tmp_path: Path,
) -> None:
    # A job whose output is incomplete must not COMPLETE (a 40 MB output once arrived as
    # 14 MB with exit 0: the runner had given up copying after 30 s).
    settings = RunnerSettings(job_id=7, nas_root=tmp_path, poll_s=0.01)
    out, err = Output(io.BytesIO()), Output(io.BytesIO())
    runner = Runner(settings, out, err, threading.Event())
    code = runner._follow(UnreadablePod([RUNNING, RUNNING, DONE]))  # type: ignore[arg-type]
    assert code == 74
    said = err._stream.getvalue().decode()  # type: ignore[attr-defined]
    assert said.endswith(
        "[slurm-k8s] outcome: Failed exit=74 reason=OutputLost: the job's output could not be "
        "copied whole from the container's log (connection reset by peer); the container's own "
        "outcome: Succeeded exit=0\n"
    )


def test_a_write_that_failed_once_is_not_retried_and_nothing_lands_after_the_hole() -> None:
    disk = FullDisk(room=10)
    out = Output(disk)
    out.write(b"12345\n")
    out.write(b"this does not fit\n")
    disk.room = 1000  # space returns: the output still has a hole, so nothing more is added
    out.write(b"later\n")
    out.line("[slurm-k8s] footer")
    assert disk.getvalue() == b"12345\n"
    assert out.lost == "No space left on device"


class RefusingPod(FakePod):
    """Answers 403 a few times, as a freshly restarted API server does (its RBAC cache)."""

    def __init__(self, states: list[PodFacts | None], refusals: int) -> None:
        super().__init__(states)
        self.refusals = refusals

    def read(self) -> PodFacts | None:
        if self.refusals:
            self.refusals -= 1
            raise AccessRefused("Kubernetes API 403 Forbidden: cannot get resource pods")
        return super().read()


def test_a_403_after_an_api_server_restart_is_retried_not_taken_for_a_deleted_pod(
    tmp_path: Path,
) -> None:
    # Found by the chaos run: the runner failed a running job (PodDeleted) on the 403 a
    # restarted API server answers until its authorizer has seen the run's Role.
    runner, buf = make(tmp_path)
    code = runner._follow(RefusingPod([RUNNING, DONE], refusals=1))  # type: ignore[arg-type]
    assert code == 0
    assert buf.getvalue().decode().endswith("[slurm-k8s] outcome: Succeeded exit=0\n")


def test_a_403_that_lasts_past_the_grace_ends_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner_main, "REFUSED_GRACE_S", 0.0)
    runner, buf = make(tmp_path)
    code = runner._follow(RefusingPod([RUNNING], refusals=1000))  # type: ignore[arg-type]
    assert code != 0
    assert "reason=PodDeleted" in buf.getvalue().decode()
