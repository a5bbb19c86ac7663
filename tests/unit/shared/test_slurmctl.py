from collections.abc import Sequence

import pytest

from shared.errors import PermanentError, TransientError
from shared.slurmctl import (
    SlurmCtl,
    SlurmJobUnknown,
    gpu_count,
    gres_gpu_count,
    parse_record,
    parse_sacct,
    run_command,
)

pytestmark = pytest.mark.unit

# Shaped like Slurm 22.05's `scontrol -o show job`, with our comments in it.
SHOW_JOB = (
    "JobId=42 JobName=hello UserId=alice(2001) GroupId=nasusers(2000) MCS_label=N/A "
    "Priority=4294901758 Nice=0 Account=(null) QOS=(null) JobState=COMPLETED Reason=None "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=3:0 "
    "RunTime=00:00:05 TimeLimit=UNLIMITED SubmitTime=2026-11-29T04:00:00 "
    "StartTime=2026-11-29T04:00:01 EndTime=2026-11-29T04:00:06 Partition=debug "
    "NodeList=node1 BatchHost=node1 NumNodes=1 NumCPUs=1 "
    "TRES=cpu=1,mem=500M,node=1,billing=1,gres/gpu=2 Command=/tmp/hello.sh "
    "WorkDir=/mnt/test-k8s Comment=slurmk8s-key=abc; reason=Error "
    "AdminComment=pod=slurm-jobs/job-42-r0 phase=Failed "
    "StdErr=/mnt/test-k8s/results/42.out StdIn=/dev/null StdOut=/mnt/test-k8s/results/%j-%u.out "
    "Power="
)


def test_scontrol_record_keeps_values_with_spaces_and_equals_signs() -> None:
    fields = parse_record(SHOW_JOB)
    assert fields["Comment"] == "slurmk8s-key=abc; reason=Error"
    assert fields["AdminComment"] == "pod=slurm-jobs/job-42-r0 phase=Failed"
    assert fields["TRES"] == "cpu=1,mem=500M,node=1,billing=1,gres/gpu=2"
    assert fields["Power"] == ""


def fake(outputs: dict[str, str | Exception]) -> tuple[SlurmCtl, list[list[str]]]:
    calls: list[list[str]] = []

    def runner(argv: Sequence[str], timeout_s: float) -> str:
        calls.append(list(argv))
        result = outputs[argv[0]]
        if isinstance(result, Exception):
            raise result
        return result

    return SlurmCtl(runner), calls


def test_show_job_gives_owner_output_path_and_restarts() -> None:
    ctl, _ = fake({"scontrol": SHOW_JOB + "\n"})
    job = ctl.show_job(42)
    assert job is not None
    assert (job.user, job.uid, job.gid, job.restarts) == ("alice", 2001, 2000, 0)
    assert job.stdout == "/mnt/test-k8s/results/42-alice.out"
    assert job.get("Account") == ""


def test_unknown_job_is_none_not_finished() -> None:
    ctl, _ = fake({"scontrol": SlurmJobUnknown("Invalid job id specified")})
    assert ctl.show_job(42) is None


def test_sacct_allocation_line() -> None:
    text = (
        "41|COMPLETED|0:0|a|b|n|t|u\n42|CANCELLED by 2001|0:15|s|e|node1|cpu=1,gres/gpu=1|alice\n"
    )
    record = parse_sacct(text, 42)
    assert record is not None
    assert record.base_state == "CANCELLED"
    assert record.exit_code == "0:15"
    assert parse_sacct(text, 43) is None


def test_update_passes_values_as_single_words() -> None:
    ctl, calls = fake({"scontrol": ""})
    ctl.update_job(42, Comment="slurmk8s-key=abc; reason=OOMKilled")
    assert calls == [
        ["scontrol", "update", "JobId=42", "Comment=slurmk8s-key=abc; reason=OOMKilled"]
    ]


def test_gpu_counts() -> None:
    assert gpu_count("cpu=1,mem=1G,gres/gpu=2") == 2
    assert gpu_count("cpu=1") == 0
    assert gres_gpu_count("gres:gpu:2") == 2
    assert gres_gpu_count("gres/gpu:tesla:4") == 4
    assert gres_gpu_count("N/A") == 0


def test_running_gpu_jobs() -> None:
    ctl, _ = fake({"squeue": "12|gres:gpu:2|node1\n13|gres:gpu:2|node1\n14|N/A|node1\n"})
    assert ctl.running_gpu_jobs() == [(12, 2), (13, 2)]


def test_command_errors_are_translated() -> None:
    with pytest.raises(PermanentError):
        run_command(["/nonexistent/scontrol"], 5)
    with pytest.raises(SlurmJobUnknown):
        run_command(
            ["sh", "-c", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"], 5
        )
    with pytest.raises(TransientError):
        run_command(["sh", "-c", "echo 'Unable to contact slurm controller' >&2; exit 1"], 5)
    with pytest.raises(TransientError):
        run_command(["sleep", "5"], 0.1)
