from dataclasses import replace

import pytest

from services.launcher.slurmjob import JobDetails
from services.launcher.watching import PodSeen, PodWatcher, finished_event, note_of
from shared.messages import Envelope, PodFinished
from shared.podfacts import PodFacts

pytestmark = pytest.mark.unit

JOB = JobDetails(
    job_id=5, state="RUNNING", restarts=0, name="x", user="alice", uid=2001, gid=2001,
    partition="gpu", node="vm", cpus=1, mem_mb=100, gpus=0, work_dir="/tmp",
    stdout="/r/5.out", stderr="/r/5.out", time_limit_s=60,
)  # fmt: skip
PENDING = PodFacts("slurm-jobs", "job-5-r0", "Pending", reason="ContainerCreating")
PULL = replace(PENDING, reason="ErrImagePull", message="not found")


def test_notes_and_finished_events() -> None:
    assert note_of(PENDING) == "pod=slurm-jobs/job-5-r0 phase=Pending reason=ContainerCreating"
    done = replace(PENDING, phase="Succeeded", reason="Completed", exit_code=0)
    assert note_of(done) == "pod=slurm-jobs/job-5-r0 phase=Succeeded exit=0"
    assert finished_event(PodSeen(5, 0, PENDING)) is None
    event = finished_event(PodSeen(5, 0, PULL))
    assert event is not None
    assert event.reason == "ErrImagePull: not found"


class Fakes:
    def __init__(self, pods: list[PodSeen], job: JobDetails | None) -> None:
        self.seen = pods
        self.job_ = job
        self.comments: list[str] = []
        self.published: list[Envelope] = []

    def pods(self) -> list[PodSeen]:
        return self.seen

    def job(self, job_id: int) -> JobDetails | None:
        return self.job_

    def set_admin_comment(self, job_id: int, text: str) -> None:
        self.comments.append(text)


def test_watcher_notes_changes_once_and_publishes_the_end_once() -> None:
    fakes = Fakes([PodSeen(5, 0, PENDING)], JOB)
    watcher = PodWatcher(fakes, fakes, fakes.published.append)
    watcher.sweep()
    watcher.sweep()
    assert fakes.comments == ["pod=slurm-jobs/job-5-r0 phase=Pending reason=ContainerCreating"]
    fakes.seen = [PodSeen(5, 0, PULL)]
    watcher.sweep()
    watcher.sweep()
    assert len(fakes.comments) == 2
    assert [type(e.body) for e in fakes.published] == [PodFinished]


@pytest.mark.parametrize("job", [None, replace(JOB, state="COMPLETING"), replace(JOB, restarts=1)])
def test_watcher_leaves_jobs_alone_that_are_not_this_run_running(job: JobDetails | None) -> None:
    fakes = Fakes([PodSeen(5, 0, PULL)], job)
    PodWatcher(fakes, fakes, fakes.published.append).sweep()
    assert fakes.comments == []
    assert fakes.published == []


def test_a_pod_stuck_on_a_not_ready_node_is_noted_as_such() -> None:
    new = PodFacts("slurm-jobs", "job-5-r0", "Pending", node="vm")
    fakes = Fakes([PodSeen(5, 0, new, node_ready=False)], JOB)
    PodWatcher(fakes, fakes, fakes.published.append).sweep()
    assert fakes.comments == ["pod=slurm-jobs/job-5-r0 phase=Pending reason=NodeNotReady"]
    # the runner gives up with the same word, so it finds its reason on the job
    assert fakes.published == []
