from dataclasses import replace

import pytest

from services.collector.observing import (
    LIST_ABOVE,
    PodObserver,
    PodSeen,
    finished_event,
    pod_note,
)
from shared.errors import PermanentError
from shared.jobscript.wrapping import ACCEPTED_MARK
from shared.messages import PodFinished
from shared.podfacts import PodFacts
from shared.slurmctl import JobInfo, admin_note

pytestmark = pytest.mark.unit

JOB = JobInfo(
    job_id=5, state="RUNNING", reason="", restarts=0, name="x", user="alice", uid=2001,
    gid=2001, partition="gpu", node="vm", cpus=1, mem_mb=100, gpus=0, work_dir="/tmp",
    time_limit_s=60, submit_time=1, admin_comment=ACCEPTED_MARK,
)  # fmt: skip
PENDING = PodFacts("slurm-jobs", "job-5-r0", "Pending", reason="ContainerCreating")
PULL = replace(PENDING, reason="ErrImagePull", message="not found")


def test_notes_and_finished_events() -> None:
    assert pod_note(PENDING) == "pod=slurm-jobs/job-5-r0 phase=Pending reason=ContainerCreating"
    done = replace(PENDING, phase="Succeeded", reason="Completed", exit_code=0)
    assert pod_note(done) == "pod=slurm-jobs/job-5-r0 phase=Succeeded exit=0"
    assert finished_event(PodSeen(5, 0, PENDING)) is None
    event = finished_event(PodSeen(5, 0, PULL))
    assert event is not None
    assert event.reason == "ErrImagePull: not found"


class Fakes:
    def __init__(self, pods: list[PodSeen], job: JobInfo | None) -> None:
        self.seen = pods
        self.job_ = job
        self.comments: list[str] = []
        self.ended: list[PodFinished] = []
        self.lookups: list[str] = []

    def pods(self) -> list[PodSeen]:
        return self.seen

    def job_status(self, job_id: int) -> JobInfo | None:
        self.lookups.append(f"job {job_id}")
        return self.job_ if self.job_ is not None and self.job_.job_id == job_id else None

    def jobs(self) -> dict[int, JobInfo]:
        self.lookups.append("all")
        return {} if self.job_ is None else {self.job_.job_id: self.job_}

    def note(self, job: JobInfo, text: str) -> None:
        wanted = admin_note(job.admin_comment, text)
        if wanted != job.admin_comment:
            self.comments.append(text)
            self.job_ = replace(job, admin_comment=wanted)


def test_observer_notes_changes_once_and_hands_over_the_end_once() -> None:
    fakes = Fakes([PodSeen(5, 0, PENDING)], JOB)
    observer = PodObserver(fakes, fakes, fakes.ended.append)
    observer.sweep()
    observer.sweep()
    assert fakes.comments == ["pod=slurm-jobs/job-5-r0 phase=Pending reason=ContainerCreating"]
    assert fakes.job_ is not None
    assert fakes.job_.admin_comment.startswith(ACCEPTED_MARK + "; pod=")
    assert fakes.lookups == ["job 5"]  # an unchanged Pod costs no Slurm call
    fakes.seen = [PodSeen(5, 0, PULL)]
    observer.sweep()
    observer.sweep()
    assert len(fakes.comments) == 2
    assert [type(e) for e in fakes.ended] == [PodFinished]


@pytest.mark.parametrize("job", [None, replace(JOB, state="COMPLETING"), replace(JOB, restarts=1)])
def test_observer_leaves_jobs_alone_that_are_not_this_run_running(job: JobInfo | None) -> None:
    fakes = Fakes([PodSeen(5, 0, PULL)], job)
    PodObserver(fakes, fakes, fakes.ended.append).sweep()
    assert fakes.comments == []
    assert fakes.ended == []


def test_a_pod_stuck_on_a_not_ready_node_is_noted_as_such() -> None:
    new = PodFacts("slurm-jobs", "job-5-r0", "Pending", node="vm")
    fakes = Fakes([PodSeen(5, 0, new, node_ready=False)], JOB)
    PodObserver(fakes, fakes, fakes.ended.append).sweep()
    assert fakes.comments == ["pod=slurm-jobs/job-5-r0 phase=Pending reason=NodeNotReady"]
    # the runner gives up with the same word, so it finds its reason on the job
    assert fakes.ended == []


def test_a_note_refused_because_the_job_just_ended_still_hands_the_end_over() -> None:
    class Finished(Fakes):
        def note(self, job: JobInfo, text: str) -> None:
            raise PermanentError("scontrol update: Job has already finished for job 5")

    fakes = Finished([PodSeen(5, 0, PULL)], JOB)
    PodObserver(fakes, fakes, fakes.ended.append).sweep()
    assert [e.reason for e in fakes.ended] == ["ErrImagePull: not found"]


def test_a_few_changed_runs_are_asked_about_alone_many_in_one_listing() -> None:
    few = [PodSeen(n, 0, replace(PENDING, name=f"job-{n}-r0")) for n in range(5, 5 + LIST_ABOVE)]
    fakes = Fakes(few, JOB)
    PodObserver(fakes, fakes, fakes.ended.append).sweep()
    assert fakes.lookups == [f"job {pod.job_id}" for pod in few]
    many = [PodSeen(n, 0, replace(PENDING, name=f"job-{n}-r0")) for n in range(5, 6 + LIST_ABOVE)]
    fakes = Fakes(many, JOB)
    PodObserver(fakes, fakes, fakes.ended.append).sweep()
    assert fakes.lookups == ["all"]
    assert fakes.comments == ["pod=slurm-jobs/job-5-r0 phase=Pending reason=ContainerCreating"]
