"""A third door: ``scontrol update`` by the job's owner, on the lab's real slurmctld.

Users may change many fields of their pending jobs. job_submit.lua's ``slurm_job_modify`` keeps
a checked slurm-k8s job inside the policy, lets in-policy changes through, and leaves plain
Slurm jobs and root's changes (the collector records failure reasons in the comment) alone.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, cwd="/tmp", capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def held_job(slurm_ready: str, lab_env: dict[str, str]) -> Iterator[int]:
    """alice's hello.sh, submitted held through plain sbatch (so it stays pending)."""
    home = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s")) / "home" / "alice"
    done = subprocess.run(
        ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-H"],
        input=(REPO / "examples" / "hello.sh").read_bytes(),
        cwd=home,
        capture_output=True,
        timeout=60,
        check=True,
    )
    job = int(done.stdout.decode().strip().split(";")[0])
    yield job
    run(["scancel", str(job)])


def update_as_alice(job: int, change: str) -> bool:
    return (
        run(["runuser", "-u", "alice", "--", "scontrol", "update", f"job={job}", change]).returncode
        == 0
    )


def show(job: int) -> str:
    return run(["scontrol", "show", "job", str(job)]).stdout


@pytest.mark.parametrize(
    "change",
    [
        "NumNodes=2",
        "NumCPUs=8",
        "MinMemoryNode=64000",
        "TresPerNode=gres:gpu:8",
        "StdOut=/tmp/x.out",
        "WorkDir=/tmp",
        "Comment=mine-now",
    ],
)
def test_owner_cannot_update_out_of_policy(held_job: int, change: str) -> None:
    before = show(held_job)
    assert not update_as_alice(held_job, change)
    assert show(held_job) == before


def test_in_policy_updates_and_root_pass(held_job: int) -> None:
    assert update_as_alice(held_job, "TimeLimit=10")
    assert update_as_alice(held_job, "StdOut=/mnt/test-k8s/results/%j.txt")
    assert f"StdOut=/mnt/test-k8s/results/{held_job}.txt" in show(held_job)
    assert (
        run(["scontrol", "update", f"job={held_job}", "Comment=slurmk8s; reason=x"]).returncode == 0
    )


def test_plain_jobs_are_left_alone(slurm_ready: str) -> None:
    done = run(
        ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-H"], stdin="#!/bin/sh\necho\n"
    )
    job = int(done.stdout.strip().split(";")[0])
    try:
        assert update_as_alice(job, "NumNodes=2")
    finally:
        run(["scancel", str(job)])
