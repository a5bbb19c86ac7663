import pytest

from services.launcher.slurmjob import SlurmJobs, details_of, time_limit_seconds, tres_value
from shared.errors import TransientError
from shared.slurmctl import SlurmJobUnknown, parse_record

pytestmark = pytest.mark.unit

# Captured from the lab's Slurm 22.05 (`scontrol -o show job 202`), trimmed of nothing.
LINE = (
    "JobId=202 JobName=probe UserId=alice(2001) GroupId=alice(2001) MCS_label=N/A "
    "Priority=3583 Nice=0 Account=research QOS=normal JobState=RUNNING Reason=None "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 "
    "RunTime=00:00:02 TimeLimit=00:02:00 TimeMin=N/A SubmitTime=2026-11-29T04:20:09 "
    "EligibleTime=2026-11-29T04:20:09 AccrueTime=2026-11-29T04:20:09 "
    "StartTime=2026-11-29T04:20:09 EndTime=2026-11-29T04:22:09 Deadline=N/A "
    "SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-29T04:20:09 Scheduler=Backfill "
    "Partition=gpu AllocNode:Sid=localhost:21782 ReqNodeList=(null) ExcNodeList=(null) "
    "NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* "
    "TRES=cpu=1,mem=100M,node=1,billing=1,gres/gpu=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* "
    "CoreSpec=* MinCPUsNode=1 MinMemoryNode=100M MinTmpDiskNode=0 Features=(null) "
    "DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) "
    "Command=(null) WorkDir=/tmp StdErr=/mnt/test-k8s/results/probe-202-probe-alice.out "
    "StdIn=/dev/null StdOut=/mnt/test-k8s/results/probe-202-probe-alice.out Power= "
    "TresPerNode=gres:gpu:1"
)


def test_details_from_a_real_record() -> None:
    job = details_of(parse_record(LINE))
    assert (job.job_id, job.user, job.uid, job.gid) == (202, "alice", 2001, 2001)
    assert (job.cpus, job.mem_mb, job.gpus) == (1, 100, 1)
    assert job.node == "vm"
    assert job.partition == "gpu"
    assert job.work_dir == "/tmp"
    assert job.stdout == job.stderr == "/mnt/test-k8s/results/probe-202-probe-alice.out"
    assert job.time_limit_s == 120
    assert job.runnable
    assert job.array_job_id is None


def test_unexpanded_patterns_are_expanded_and_arrays_read() -> None:
    line = LINE.replace(
        "StdOut=/mnt/test-k8s/results/probe-202-probe-alice.out", "StdOut=/r/%A_%a-%x-%u.out"
    )
    line += " ArrayJobId=200 ArrayTaskId=2"
    job = details_of(parse_record(line))
    assert job.stdout == "/r/200_2-probe-alice.out"
    assert (job.array_job_id, job.array_task_id) == (200, 2)


def test_memory_in_gigabytes_and_no_gpus() -> None:
    line = LINE.replace("mem=100M", "mem=2G").replace(",gres/gpu=1", "")
    job = details_of(parse_record(line))
    assert (job.mem_mb, job.gpus) == (2048, 0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:02:00", 120),
        ("1-00:00:00", 86400),
        ("2-03", 2 * 86400 + 3 * 3600),
        ("5:30", 330),
        ("10", 600),
        ("UNLIMITED", None),
        ("Partition_Limit", None),
    ],
)
def test_time_limits(text: str, seconds: int | None) -> None:
    assert time_limit_seconds(text) == seconds


def test_tres_value() -> None:
    assert tres_value("cpu=2,mem=1G,gres/gpu=3", "gres/gpu") == "3"
    assert tres_value("cpu=2", "mem") == ""


class FakeRunner:
    def __init__(self, answers: dict[str, str | Exception]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout_s: float) -> str:
        self.calls.append(list(argv))
        answer = self.answers[argv[1]]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_unknown_job_is_none_and_unreachable_is_transient() -> None:
    assert SlurmJobs(FakeRunner({"-o": SlurmJobUnknown("Invalid job id")})).job(1) is None
    with pytest.raises(TransientError):
        SlurmJobs(FakeRunner({"-o": TransientError("Unable to contact slurm controller")})).job(1)


def test_batch_script_and_admin_comment_commands() -> None:
    runner = FakeRunner({"write": "#!/bin/sh\n", "update": ""})
    slurm = SlurmJobs(runner)
    assert slurm.batch_script(7) == "#!/bin/sh\n"
    slurm.set_admin_comment(7, "pod=slurm-jobs/job-7-r0 phase=Pending")
    assert runner.calls == [
        ["scontrol", "write", "batch_script", "7", "-"],
        ["scontrol", "update", "JobId=7", "AdminComment=pod=slurm-jobs/job-7-r0 phase=Pending"],
    ]
