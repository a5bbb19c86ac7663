import json
from dataclasses import replace
from pathlib import Path

import pytest

from services.collector.handlers import (
    FOOTER_MARK,
    Claim,
    Collector,
    Outcome,
    RunKey,
    RunStatus,
    SlurmJob,
    classify,
    comment_with_reason,
    footer_of,
    outcome_of,
)
from shared.errors import PermanentError, TransientError
from shared.messages import Envelope, JobEnded, PodFinished
from shared.podfacts import PodFacts

pytestmark = pytest.mark.unit

RUN = RunKey(42, 0)
OUT = "/mnt/test-k8s/results/42.out"
DONE = SlurmJob(
    job_id=42,
    ctld_state="COMPLETED",
    acct_state="COMPLETED",
    restarts=0,
    exit_code="0:0",
    node="node1",
    stdout=OUT,
    user="alice",
    uid=2001,
    gid=2000,
    comment="slurmk8s-key=abc",
    admin_comment="pod=slurm-jobs/job-42-r0 phase=Running",
)
POD = PodFacts(
    "slurm-jobs",
    "job-42-r0",
    "Succeeded",
    node="node1",
    image="nas-hub.local:5407/hello:1",
    image_id="nas-hub.local:5407/hello@sha256:" + "a" * 64,
    exit_code=0,
    reason="Completed",
    started_at="2026-11-29T04:00:00+00:00",
    finished_at="2026-11-29T04:00:05+00:00",
    gpus=1,
)


class FakeSlurm:
    def __init__(self, jobs: dict[int, SlurmJob | None]) -> None:
        self.jobs = jobs
        self.updates: list[tuple[int, dict[str, str]]] = []
        self.fail: Exception | None = None

    def job(self, job_id: int) -> SlurmJob | None:
        if self.fail is not None:
            raise self.fail
        return self.jobs.get(job_id)

    def update(self, job_id: int, **fields: str) -> None:
        self.updates.append((job_id, fields))
        job = self.jobs[job_id]
        assert job is not None
        self.jobs[job_id] = replace(
            job,
            comment=fields.get("Comment", job.comment),
            admin_comment=fields.get("AdminComment", job.admin_comment),
        )


class FakeCluster:
    def __init__(self, pods: dict[str, PodFacts], extra_runs: list[RunKey] | None = None) -> None:
        self.pods = pods
        self.accounts = {name for name in pods} | {r.name for r in extra_runs or []}
        self.deleted: list[str] = []
        self.every_kind: list[str] = []
        self.ended: list[str] = []
        self.claimed: set[str] = set()
        """Runs whose account carries a claim (this collector's or another's)."""
        self.released: list[str] = []
        self.fail_delete: Exception | None = None

    def claim_run(self, name: str) -> Claim:
        if name not in self.accounts:
            return Claim.NO_ACCOUNT
        if name in self.claimed:
            return Claim.HELD
        self.claimed.add(name)
        return Claim.CLAIMED

    def release_run(self, name: str) -> None:
        self.released.append(name)
        self.claimed.discard(name)

    def pod(self, name: str) -> PodFacts | None:
        return self.pods.get(name)

    def delete_run(self, name: str, *, every_kind: bool = False, ended: bool = False) -> None:
        if self.fail_delete is not None:
            error, self.fail_delete = self.fail_delete, None
            raise error
        self.claimed.discard(name)
        self.deleted.append(name)
        if ended:
            self.ended.append(name)
        if every_kind:
            self.every_kind.append(name)
        self.pods.pop(name, None)
        self.accounts.discard(name)

    def runs(self) -> list[RunKey]:
        keys = set()
        for name in self.accounts:
            _, job, r = name.split("-")
            keys.add(RunKey(int(job), int(r[1:])))
        return sorted(keys, key=lambda k: (k.job_id, k.restart_count))


class FakeFiles:
    def __init__(self, header: bool = True, footer: bool = True) -> None:
        self.header = header
        self.footer = footer
        self.summaries: dict[str, bytes] = {}
        self.footers: list[str] = []
        self.handoffs_removed: list[RunKey] = []
        self.fail: Exception | None = None

    def has_runner_lines(self, output: Path, uid: int) -> bool:
        return self.header

    def complete_output(self, output: Path, uid: int, footer: str) -> bool:
        if self.fail:
            raise self.fail
        if self.footer:
            return False
        self.footer = True
        self.footers.append(footer)
        return True

    def summary_exists(self, output: Path) -> bool:
        return str(output) in self.summaries

    def write_summary(self, output: Path, uid: int, gid: int, content: bytes) -> None:
        assert (uid, gid) == (2001, 2000)
        self.summaries[str(output)] = content

    def remove_handoff(self, run: RunKey) -> None:
        self.handoffs_removed.append(run)


def ended(run: RunKey = RUN) -> Envelope:
    return Envelope.wrap(
        JobEnded(
            job_id=run.job_id,
            restart_count=run.restart_count,
            node="node1",
            user="alice",
            uid=2001,
            gid=2000,
            gpus="0",
        )
    )


def make(
    job: SlurmJob | None = DONE, pod: PodFacts | None = POD, files: FakeFiles | None = None
) -> tuple[Collector, FakeSlurm, FakeCluster, FakeFiles]:
    slurm = FakeSlurm({42: job})
    cluster = FakeCluster({"job-42-r0": pod} if pod else {})
    files = files or FakeFiles()
    return Collector(slurm, cluster, files), slurm, cluster, files


# --- classify: the fail-closed rule -------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (None, RunStatus.UNKNOWN),
        (DONE, RunStatus.FINISHED),
        (replace(DONE, ctld_state="RUNNING", acct_state="RUNNING"), RunStatus.ACTIVE),
        (replace(DONE, ctld_state="COMPLETING", acct_state="COMPLETED"), RunStatus.ACTIVE),
        (replace(DONE, acct_state=""), RunStatus.ENDING),
        (replace(DONE, ctld_state="", restarts=None), RunStatus.FINISHED),
        (replace(DONE, ctld_state="", restarts=None, acct_state="RUNNING"), RunStatus.UNKNOWN),
        (
            replace(DONE, ctld_state="PENDING", acct_state="REQUEUED", restarts=1),
            RunStatus.FINISHED,
        ),
    ],
)
def test_only_explicit_terminal_states_count_as_finished(
    job: SlurmJob | None, expected: RunStatus
) -> None:
    assert classify(job, 0) is expected


# --- job.ended ------------------------------------------------------------------------------


def test_ended_run_is_summarised_recorded_and_cleaned_up() -> None:
    collector, slurm, cluster, files = make()
    assert collector.handle(ended()) == ()
    summary = json.loads(files.summaries[OUT])
    assert summary["state"] == "COMPLETED"
    assert summary["exit_code"] == 0
    assert summary["image_digest"] == "sha256:" + "a" * 64
    assert summary["pod"] == "slurm-jobs/job-42-r0"
    assert summary["gpus"] == 1
    assert summary["gpu_indices"] == "0"
    assert summary["user"] == "alice"
    assert cluster.deleted == ["job-42-r0"]
    assert cluster.every_kind == [], "the epilog's path deletes the owner; the rest cascades"
    assert cluster.ended == ["job-42-r0"], "an exited Pod goes at once, without a grace period"
    assert files.handoffs_removed == [RUN]
    assert files.footers == [], "the runner's footer was there"
    # slurmctld refuses updates of finished jobs: none is attempted
    assert slurm.updates == []


def test_redelivery_changes_nothing_and_raises_nothing() -> None:
    collector, slurm, _, files = make()
    collector.handle(ended())
    first = dict(files.summaries)
    collector.handle(ended())
    assert files.summaries == first, "summary kept: the Pod is gone, its facts are not"
    assert slurm.updates == []
    assert len(files.footers) <= 1


def test_missing_footer_is_appended_once_with_the_outcome() -> None:
    oom = replace(POD, phase="Failed", exit_code=137, reason="OOMKilled")
    job = replace(DONE, ctld_state="OUT_OF_MEMORY", acct_state="OUT_OF_MEMORY", exit_code="0:9")
    collector, _, _, files = make(job=job, pod=oom, files=FakeFiles(footer=False))
    collector.handle(ended())
    collector.handle(ended())
    assert len(files.footers) == 1
    assert files.footers[0].startswith(
        f"{FOOTER_MARK} OUT_OF_MEMORY exit_code=137 reason=OOMKilled"
    )
    assert json.loads(files.summaries[OUT])["reason"] == "OOMKilled"


def test_slurm_not_yet_recording_the_end_is_retried_not_guessed() -> None:
    lagging = replace(DONE, ctld_state="COMPLETING", acct_state="RUNNING")
    collector, _, cluster, _ = make(job=lagging)
    with pytest.raises(TransientError):
        collector.handle(ended())
    assert cluster.deleted == []
    # The claim taken while Slurm was asked is given back: the retry, or another collector,
    # finds the run free.
    assert (cluster.claimed, cluster.released) == (set(), ["job-42-r0"])


def test_a_slurm_lookup_that_fails_gives_back_the_claim_taken_meanwhile() -> None:
    collector, slurm, cluster, _ = make()
    slurm.fail = TransientError("slurmctld busy")
    with pytest.raises(TransientError):
        collector.handle(ended())
    assert (cluster.claimed, cluster.deleted) == (set(), [])


def test_completing_with_final_accounting_is_finished_for_the_epilogs_event() -> None:
    # What the lab shows while the epilog runs: slurmctld COMPLETING, sacct COMPLETED.
    collector, _, cluster, files = make(job=replace(DONE, ctld_state="COMPLETING"))
    collector.handle(ended())
    assert cluster.deleted == ["job-42-r0"]
    assert json.loads(files.summaries[OUT])["state"] == "COMPLETED"
    # ...but the reconcile, without the epilog's word, waits for slurmctld to finish too.
    collector2, _, cluster2, _ = make(job=replace(DONE, ctld_state="COMPLETING"))
    assert collector2.reconcile()[0].done is False
    assert cluster2.deleted == []


def test_epilog_event_for_a_job_slurm_forgot_still_cleans_up() -> None:
    collector, _, cluster, files = make(job=None)
    collector.handle(ended())
    assert cluster.deleted == ["job-42-r0"]
    assert files.summaries == {}, "no output path without Slurm's record"


def test_a_run_another_collector_claimed_is_left_to_it() -> None:
    # Three collector replicas: a job.ended delivered twice reached two at once.
    collector, _, cluster, files = make()
    cluster.claimed.add("job-42-r0")
    result = collector.finish_run(RUN, from_epilog=True)
    assert not result.done
    assert result.notes == ("claimed by another collector",)
    assert (files.summaries, cluster.deleted, files.handoffs_removed) == ({}, [], [])


def test_a_failed_finish_gives_its_claim_back_for_the_retry() -> None:
    collector, _, cluster, _ = make()
    cluster.fail_delete = TransientError("API server busy")
    with pytest.raises(TransientError):
        collector.handle(ended())
    assert cluster.released == ["job-42-r0"]
    assert collector.finish_run(RUN, from_epilog=True).done
    assert cluster.deleted == ["job-42-r0"]


def test_a_run_without_a_service_account_is_still_finished_unclaimed() -> None:
    collector, _, cluster, files = make()
    cluster.accounts.clear()
    assert collector.finish_run(RUN, from_epilog=True).done
    assert cluster.released == []
    assert OUT in files.summaries


def test_without_its_account_a_summarised_run_is_not_finished_again() -> None:
    # The account's delete is a finish's last step: a second job.ended, or a sweep that
    # listed the run before the delete, comes after a whole finish.
    collector, _, cluster, files = make()
    assert collector.handle(ended()) == ()
    receipts = list(files.handoffs_removed)
    assert collector.finish_run(RUN, from_epilog=True).notes == ("already finished",)
    swept = collector.finish_run(RUN, from_epilog=False)
    assert (swept.done, swept.notes) == (False, ("leftovers deleted",))
    assert cluster.every_kind == ["job-42-r0"]
    assert files.handoffs_removed == receipts


def test_broken_user_files_never_block_the_cleanup() -> None:
    files = FakeFiles()
    files.fail = PermanentError("output is a symlink")
    collector, _, cluster, _ = make(files=files)
    result = collector.finish_run(RUN, from_epilog=True)
    assert cluster.deleted == ["job-42-r0"]
    assert any("symlink" in note for note in result.notes)


def test_plain_jobs_output_is_left_alone() -> None:
    collector, _, cluster, files = make(pod=None, files=FakeFiles(header=False))
    collector.handle(ended())
    assert files.summaries == {}
    assert files.footers == []
    assert cluster.deleted == ["job-42-r0"], "deleting nothing is harmless and idempotent"


def test_requeued_run_is_reported_as_requeued_and_leaves_the_job_alone() -> None:
    job = replace(DONE, ctld_state="PENDING", acct_state="PENDING", restarts=1, exit_code="0:0")
    collector, slurm, cluster, files = make(job=job)
    collector.handle(ended())
    assert json.loads(files.summaries[OUT])["state"] == "REQUEUED"
    assert slurm.updates == [], "the next run owns the job's comments now"
    assert cluster.deleted == ["job-42-r0"]


def test_pod_finished_records_failure_early_without_deleting() -> None:
    running = replace(DONE, ctld_state="RUNNING", acct_state="RUNNING")
    collector, slurm, cluster, _ = make(job=running)
    event = PodFinished(
        job_id=42,
        restart_count=0,
        namespace="slurm-jobs",
        pod_name="job-42-r0",
        phase="Failed",
        exit_code=None,
        reason="ErrImagePull",
    )
    collector.handle(Envelope.wrap(event))
    assert cluster.deleted == []
    fields = slurm.updates[0][1]
    assert fields["Comment"] == "slurmk8s-key=abc; reason=ErrImagePull"
    # The observer's text: the reason stays on the job (one note, one writer's format).
    assert fields["AdminComment"] == "pod=slurm-jobs/job-42-r0 phase=Failed reason=ErrImagePull"


# --- reconcile ------------------------------------------------------------------------------


def test_reconcile_cleans_finished_runs_and_keeps_running_or_unknown_ones() -> None:
    slurm = FakeSlurm(
        {
            42: DONE,
            43: replace(DONE, job_id=43, ctld_state="RUNNING", acct_state="RUNNING"),
            44: None,
            45: replace(DONE, job_id=45, ctld_state="PENDING", acct_state="PENDING", restarts=1),
            46: replace(DONE, job_id=46, acct_state=""),  # accounting lags: not yet
        }
    )
    runs = [RunKey(j, 0) for j in (42, 43, 44, 45, 46)]
    cluster = FakeCluster({}, extra_runs=runs)
    collector = Collector(slurm, cluster, FakeFiles())
    results = collector.reconcile()
    assert sorted(cluster.deleted) == ["job-42-r0", "job-45-r0"]
    # Leftovers may have lost their owner: the reconcile deletes every kind by name.
    assert sorted(cluster.every_kind) == ["job-42-r0", "job-45-r0"]
    assert {r.run.job_id: r.status for r in results if not r.done} == {
        43: RunStatus.ACTIVE,
        44: RunStatus.UNKNOWN,
        46: RunStatus.ENDING,
    }


def test_reconcile_survives_one_runs_error() -> None:
    class Flaky(FakeSlurm):
        def job(self, job_id: int) -> SlurmJob | None:
            if job_id == 43:
                raise TransientError("slurmctld busy")
            return super().job(job_id)

    slurm = Flaky({42: DONE, 43: DONE})
    cluster = FakeCluster({}, extra_runs=[RunKey(42, 0), RunKey(43, 0)])
    Collector(slurm, cluster, FakeFiles()).reconcile()
    assert cluster.deleted == ["job-42-r0"]


# --- small pure pieces ----------------------------------------------------------------------


def test_comment_keeps_the_validators_key_and_is_not_repeated() -> None:
    failed = Outcome("FAILED", 3, "Error")
    assert comment_with_reason("slurmk8s-key=k", failed) == "slurmk8s-key=k; reason=Error"
    assert comment_with_reason("", failed) == "reason=Error"
    assert comment_with_reason("slurmk8s-key=k; reason=Error", failed) is None
    assert comment_with_reason("x", Outcome("COMPLETED", 0, "Completed")) is None


def test_exit_code_comes_from_the_container_then_from_slurm() -> None:
    assert outcome_of(RUN, replace(DONE, exit_code="3:0"), None).exit_code == 3
    assert outcome_of(RUN, DONE, replace(POD, exit_code=5)).exit_code == 5


def test_footer_names_state_code_and_reason() -> None:
    footer = footer_of(Outcome("FAILED", 2, "Error"))
    assert footer.startswith("[slurm-k8s] outcome: FAILED exit_code=2 reason=Error")
    assert footer.endswith("\n")
