import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.collector.backlog import SubmitBacklog
from services.collector.handlers import Collector, RunKey
from services.collector.reconciling import Bounds, Reconciler, job_started_of, waiting_for_launcher
from services.watcher.scanning import FileStat, by_identity
from shared.errors import TransientError
from shared.jobscript.wrapping import ACCEPTED_MARK
from shared.messages import Envelope, FileDetected, JobStarted
from shared.slurmctl import JobInfo
from tests.unit.services.collector.test_handlers import DONE, FakeCluster, FakeFiles, FakeSlurm

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC).timestamp()
RUNNING = JobInfo(
    job_id=7, state="RUNNING", reason="", restarts=1, name="x", user="alice", uid=2001,
    gid=2001, partition="batch", node="vm", cpus=1, mem_mb=100, gpus=1, work_dir="/tmp",
    time_limit_s=60, submit_time=1, start="2026-12-02T08:59:00", admin_comment=ACCEPTED_MARK,
    gpu_indices="0",
)  # fmt: skip
FILE = FileDetected(path="/nas/submit/a.sh", size=3, mtime_ns=1, sha256="ab" * 32, owner_uid=2001)


class Fakes:
    def __init__(self, jobs: dict[int, JobInfo], answered: set[RunKey] | None = None) -> None:
        self.slurm_jobs = jobs
        self.answered = answered or set()
        self.files: list[FileDetected] = []
        self.published: list[Envelope] = []
        self.fail: Exception | None = None

    def jobs(self) -> dict[int, JobInfo]:
        if self.fail:
            raise self.fail
        return self.slurm_jobs

    def run_answered(self, run: RunKey) -> bool:
        return run in self.answered

    def waiting(self, older_than_s: float) -> list[FileDetected]:
        return self.files


def reconciler(fakes: Fakes, clock: list[float], cluster: FakeCluster | None = None) -> Reconciler:
    collector = Collector(FakeSlurm({42: DONE}), cluster or FakeCluster({}), FakeFiles())
    return Reconciler(
        collector, fakes, fakes, fakes, fakes.published.append, Bounds(30, 300), lambda: clock[0]
    )


def test_a_running_job_without_the_launchers_answer_gets_its_job_started_again() -> None:
    fakes = Fakes({7: RUNNING})
    clock = [NOW]
    sweep = reconciler(fakes, clock)
    assert sweep.reconcile().relaunched == (RunKey(7, 1),)
    (envelope,) = fakes.published
    assert envelope.body == JobStarted(
        job_id=7, restart_count=1, node="vm", user="alice", uid=2001, gid=2001,
        partition="batch", gpus="0",
    )  # fmt: skip
    # Once per bound: the launcher may just be slow, and its queue must not fill with copies.
    clock[0] += 10
    assert sweep.reconcile().relaunched == ()
    clock[0] += 30
    assert sweep.reconcile().relaunched == (RunKey(7, 1),)


@pytest.mark.parametrize(
    "job",
    [
        replace(RUNNING, start="2026-12-02T08:59:45"),  # started 15 s ago: the launcher's turn
        replace(RUNNING, admin_comment=""),  # a plain Slurm job: no Pod is ever made
        replace(RUNNING, state="PENDING"),
        replace(RUNNING, state="COMPLETING"),
        replace(RUNNING, start=""),
        replace(RUNNING, node=""),
    ],
)
def test_jobs_that_need_no_relaunch(job: JobInfo) -> None:
    assert not waiting_for_launcher(job, NOW, 30)


def test_an_answered_run_is_left_to_its_batch_step() -> None:
    fakes = Fakes({7: RUNNING}, answered={RunKey(7, 1)})
    assert reconciler(fakes, [NOW]).reconcile().relaunched == ()
    assert fakes.published == []


def test_a_failed_or_empty_slurm_lookup_changes_nothing() -> None:
    fakes = Fakes({})
    assert reconciler(fakes, [NOW]).reconcile().relaunched == ()
    fakes.fail = TransientError("slurmctld down")
    fakes.files = [FILE]
    report = reconciler(fakes, [NOW]).reconcile()
    assert report.relaunched == ()
    # One view that cannot be read does not stop the others.
    assert report.republished == (FILE.path,)


def test_a_waiting_file_is_published_again_once_per_bound() -> None:
    fakes = Fakes({})
    fakes.files = [FILE]
    clock = [NOW]
    sweep = reconciler(fakes, clock)
    assert sweep.reconcile().republished == (FILE.path,)
    assert [e.body for e in fakes.published] == [FILE]
    clock[0] += 100
    assert sweep.reconcile().republished == ()
    clock[0] += 200
    assert sweep.reconcile().republished == (FILE.path,)


def test_finished_runs_are_cleaned_through_the_collector() -> None:
    cluster = FakeCluster({}, extra_runs=[RunKey(42, 0)])
    report = reconciler(Fakes({}), [NOW], cluster).reconcile()
    assert [r.run for r in report.finished if r.done] == [RunKey(42, 0)]
    assert cluster.every_kind == ["job-42-r0"]


def test_the_relaunched_event_comes_from_slurmctlds_structured_record() -> None:
    event = job_started_of(replace(RUNNING, gpu_indices="", gpus=0))
    assert (event.uid, event.gid, event.user, event.gpus) == (2001, 2001, "alice", "")


# --- the submit folder's backlog --------------------------------------------------------------


def test_backlog_lists_only_files_older_than_the_bound(tmp_path: Path) -> None:
    old = tmp_path / "old.sh"
    old.write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "new.sh").write_text("#!/bin/sh\n")
    changed = old.stat().st_ctime
    backlog = SubmitBacklog(tmp_path, 1000, clock=lambda: changed + 60)
    assert backlog.waiting(300) == []
    later = SubmitBacklog(tmp_path, 1000, clock=lambda: changed + 600)
    events = {Path(e.path).name: e for e in later.waiting(300)}
    assert sorted(events) == ["new.sh", "old.sh"]
    # The watcher's digest: the same submission key as the event that was lost.
    assert events["old.sh"].sha256 == hashlib.sha256(old.read_bytes()).hexdigest()


def test_backlog_never_follows_links_and_keys_a_big_file_by_its_identity(tmp_path: Path) -> None:
    submit = tmp_path / "submit"
    submit.mkdir()
    target = tmp_path / "elsewhere.sh"
    target.write_text("secret")
    (submit / "link.sh").symlink_to(target)
    big = submit / "big.sh"
    big.write_bytes(b"x" * 2000)
    changed = big.stat().st_ctime
    events = {Path(e.path).name: e for e in SubmitBacklog(submit, 1000, lambda: changed + 600)
              .waiting(300)}  # fmt: skip
    assert events["big.sh"].sha256 == by_identity(stat_of(big)).sha256
    # A link is never followed: if listed at all (to be answered), it is keyed by identity.
    secret = hashlib.sha256(b"secret").hexdigest()
    assert all(event.sha256 != secret for event in events.values())


def stat_of(path: Path) -> FileStat:
    st = path.lstat()
    return FileStat(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_uid)
