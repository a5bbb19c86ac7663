from collections.abc import Sequence
from pathlib import Path

import pytest

from shared.errors import TransientError
from shared.explaining import Explanation, diagnose, gather, render
from shared.podfacts import PodEvent, PodFacts
from shared.slurmctl import AccountingRecord, JobRecord, SlurmCtl, SlurmJobUnknown, parse_record

pytestmark = pytest.mark.unit


def job(**fields: str) -> JobRecord:
    base = (
        "JobId=42 JobName=train UserId=alice(2001) GroupId=nasusers(2000) JobState=RUNNING "
        "Reason=None Restarts=0 ExitCode=0:0 TimeLimit=01:00:00 NodeList=node1 "
        "TRES=cpu=2,mem=1G,node=1,gres/gpu=2 StdOut=/r/42.out Comment=slurmk8s-key=k"
    )
    record = parse_record(base)
    record.update(fields)
    return JobRecord(record)


POD = PodFacts(
    "slurm-jobs",
    "job-42-r0",
    "Running",
    node="node1",
    image="nas-hub.local:5407/train:1",
    image_id="x@sha256:" + "c" * 64,
    gpus=2,
)


def test_pending_for_gpus_names_the_jobs_holding_them() -> None:
    ex = Explanation(42, job=job(JobState="PENDING", Reason="Resources"))
    ex.gpu_holders = [(12, 2), (13, 2)]
    assert diagnose(ex) == "waiting for GPUs: needs 2, 4 in use by jobs 12, 13"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Priority", "waiting for higher-priority jobs"),
        ("Dependency", "waiting for its dependency"),
        ("JobHeldUser", "held (JobHeldUser)"),
    ],
)
def test_pending_reasons_in_words(reason: str, expected: str) -> None:
    ex = Explanation(42, job=job(JobState="PENDING", Reason=reason))
    assert diagnose(ex).startswith(expected)


def test_image_pull_failure_is_named_with_its_message() -> None:
    pod = PodFacts("slurm-jobs", "job-42-r0", "Pending", reason="ErrImagePull", message="not found")
    ex = Explanation(42, job=job(), pod=pod)
    assert diagnose(ex) == "image pull failed: not found"


def test_running_and_completed_and_failed() -> None:
    assert diagnose(Explanation(42, job=job(), pod=POD)).startswith("running in Pod")
    assert diagnose(Explanation(42, job=job(JobState="COMPLETED"))) == "completed"
    failed = Explanation(42, job=job(JobState="FAILED", ExitCode="3:0"))
    failed.summary = {"exit_code": 3, "reason": "Error"}
    assert diagnose(failed) == "failed with exit code 3 (Error)"
    assert diagnose(Explanation(42, job=job(JobState="TIMEOUT"))) == "hit its time limit (01:00:00)"


def test_finished_job_known_only_to_accounting() -> None:
    acct = AccountingRecord("COMPLETED", "0:0", "s", "e", "node1", "cpu=1", "alice")
    ex = Explanation(42, acct=acct)
    assert diagnose(ex) == "completed"
    assert "Accounting: COMPLETED" in render(ex)


def test_page_has_slurm_pod_events_summary_and_notes() -> None:
    ex = Explanation(42, job=job(), pod=POD, pod_name="job-42-r0", pod_checked=True)
    ex.events = [PodEvent("2026-11-29T04:00:00+00:00", "Normal", "Pulled", "image present")]
    ex.summary = {"state": "COMPLETED", "exit_code": 0, "message": ""}
    ex.summary_path = "/r/42.out.summary.json"
    ex.notes = ["sacct: down"]
    page = render(ex)
    for text in (
        "Job 42 (train), user alice: RUNNING",
        "Diagnosis: running in Pod slurm-jobs/job-42-r0 on node1",
        "Comment: slurmk8s-key=k",
        "Digest: sha256:" + "c" * 64,
        "Pulled",
        "Summary (/r/42.out.summary.json)",
        "exit_code: 0",
        "sacct: down",
    ):
        assert text in page
    assert "message:" not in page


def test_gather_degrades_to_notes(tmp_path: Path) -> None:
    out = tmp_path / "42.out"
    (tmp_path / "42.out.summary.json").write_text('{"state": "FAILED", "exit_code": 1}')

    def runner(argv: Sequence[str], timeout_s: float) -> str:
        if argv[0] == "scontrol":
            return f"JobId=42 UserId=alice(2001) JobState=FAILED Restarts=0 StdOut={out}\n"
        raise TransientError("slurmdbd down")

    ex = gather(42, SlurmCtl(runner), None, "Pod details unavailable: no KUBECONFIG")
    assert ex.summary == {"state": "FAILED", "exit_code": 1}
    assert any("slurmdbd down" in n for n in ex.notes)
    assert "(not checked" in render(ex)
    assert diagnose(ex) == "failed with exit code 1"


def test_gather_reads_the_current_runs_pod() -> None:
    def runner(argv: Sequence[str], timeout_s: float) -> str:
        if argv[0] == "scontrol":
            return "JobId=42 UserId=alice(2001) JobState=RUNNING Restarts=2\n"
        raise SlurmJobUnknown("none")

    seen: list[tuple[int, int | None]] = []

    def pods(job_id: int, restarts: int | None) -> tuple[PodFacts | None, str, list[PodEvent]]:
        seen.append((job_id, restarts))
        return None, "job-42-r2", []

    ex = gather(42, SlurmCtl(runner), pods)
    assert seen == [(42, 2)]
    assert "gone" in render(ex)
