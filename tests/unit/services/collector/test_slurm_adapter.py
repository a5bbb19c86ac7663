import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from services.collector.slurm import SlurmAdapter
from shared.slurmctl import SlurmCtl

pytestmark = pytest.mark.unit

SQUEUE = json.loads((Path(__file__).parents[3] / "data" / "squeue-22.05.json").read_text())


def squeue_with(**changes: object) -> str:
    document = json.loads(json.dumps(SQUEUE))
    job = next(j for j in document["jobs"] if j["job_id"] == 3)
    job.update(changes)
    return json.dumps(document)


def adapter(squeue: str, sacct: str) -> SlurmAdapter:
    def runner(argv: Sequence[str], timeout_s: float) -> str:
        assert argv[0] != "scontrol", "identity and paths never come from scontrol text"
        return squeue if argv[0] == "squeue" else sacct

    return SlurmAdapter(SlurmCtl(runner))


def test_slurmctld_record_and_accounting_are_merged() -> None:
    squeue = squeue_with(job_state="COMPLETING", restart_cnt=1)
    job = adapter(squeue, "3|FAILED|1:0|s|e|vm|cpu=1,gres/gpu=1|alice\n").job(3)
    assert job is not None
    assert (job.ctld_state, job.acct_state, job.state) == ("COMPLETING", "FAILED", "FAILED")
    assert (job.restarts, job.uid, job.gid, job.gpus) == (1, 2001, 2001, 1)
    assert job.stdout == "/mnt/test-k8s/home/alice/cap-3.out"
    assert job.exit_code == "1:0"
    assert job.comment == ""


def test_forgotten_job_falls_back_to_accounting_without_restart_count() -> None:
    job = adapter(squeue_with(job_id=4), "3|COMPLETED|0:0|s|e|node1|cpu=1|bob\n").job(3)
    assert job is not None
    assert (job.ctld_state, job.acct_state, job.restarts, job.uid) == ("", "COMPLETED", None, None)


def test_nobody_knows_the_job() -> None:
    assert adapter(squeue_with(job_id=4), "").job(3) is None


def status_line(state: str) -> str:
    """One job's own squeue record (``STATUS_FIELDS``), as the lab prints it."""
    return (
        f"3\x1f3\x1fN/A\x1f{state}\x1fNone\x1f0\x1falice\x1f2001\x1f2001\x1fvm\x1fvm\x1f"
        "cpu=1,gres/gpu=1\x1fcap\x1f(null)\x1fslurmk8s-accepted; pod=x\x1f"
        "/mnt/test-k8s/home/alice/cap-%j.out\x1fgpu\x1f1\x1f/mnt/test-k8s/home/alice\x1f"
        "UNLIMITED\x1f2026-12-03T07:28:32\x1f2026-12-03T07:28:33\x1fN/A\x1f\n"
    )


def recording(state: str) -> tuple[SlurmAdapter, list[list[str]]]:
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], timeout_s: float) -> str:
        calls.append(list(argv))
        if argv[0] == "sacct":
            return "3|COMPLETED|0:0|s|e|vm|cpu=1|alice\n"
        return SQUEUE_TEXT if "--json" in argv else status_line(state)

    return SlurmAdapter(SlurmCtl(runner)), calls


SQUEUE_TEXT = squeue_with(admin_comment="slurmk8s-accepted; pod=x")


@pytest.mark.parametrize("state", ["RUNNING", "COMPLETING", "COMPLETED", "FAILED"])
def test_slurmctld_is_asked_about_this_job_alone(state: str) -> None:
    slurm, calls = recording(state)
    job = slurm.job(3)
    assert job is not None
    assert (job.ctld_state, job.restarts, job.uid, job.gid, job.gpus) == (state, 0, 2001, 2001, 1)
    assert job.stdout == "/mnt/test-k8s/home/alice/cap-3.out"
    assert not any("--json" in call for call in calls)  # no listing of the whole queue


def test_a_job_that_still_runs_gets_its_admin_comment_for_the_note() -> None:
    slurm, calls = recording("RUNNING")
    job = slurm.job(3)
    assert job is not None
    assert job.admin_comment == "slurmk8s-accepted; pod=x"
    assert not any("--json" in call for call in calls)
