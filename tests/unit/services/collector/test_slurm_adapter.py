from collections.abc import Sequence

import pytest

from services.collector.slurm import SlurmAdapter
from shared.slurmctl import SlurmCtl, SlurmJobUnknown

pytestmark = pytest.mark.unit

SHOW = (
    "JobId=7 JobName=x UserId=bob(2002) GroupId=nasusers(2000) JobState=COMPLETING "
    "Reason=None Restarts=1 ExitCode=1:0 StartTime=s EndTime=e NodeList=node1 BatchHost=node1 "
    "TRES=cpu=1,gres/gpu=1 Comment=(null) AdminComment=(null) StdOut=/r/7.out"
)


def adapter(show: str | Exception, sacct: str) -> SlurmAdapter:
    def runner(argv: Sequence[str], timeout_s: float) -> str:
        result = show if argv[0] == "scontrol" else sacct
        if isinstance(result, Exception):
            raise result
        return result

    return SlurmAdapter(SlurmCtl(runner))


def test_slurmctld_record_and_accounting_are_merged() -> None:
    job = adapter(SHOW, "7|FAILED|1:0|s|e|node1|cpu=1,gres/gpu=1|bob\n").job(7)
    assert job is not None
    assert (job.ctld_state, job.acct_state, job.state) == ("COMPLETING", "FAILED", "FAILED")
    assert (job.restarts, job.uid, job.stdout, job.gpus) == (1, 2002, "/r/7.out", 1)
    assert job.comment == ""


def test_forgotten_job_falls_back_to_accounting_without_restart_count() -> None:
    job = adapter(SlurmJobUnknown("Invalid job id"), "7|COMPLETED|0:0|s|e|node1|cpu=1|bob\n").job(7)
    assert job is not None
    assert (job.ctld_state, job.acct_state, job.restarts) == ("", "COMPLETED", None)


def test_nobody_knows_the_job() -> None:
    assert adapter(SlurmJobUnknown("Invalid job id"), "").job(7) is None
