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
