"""Slurm sees the container's true outcome, and failures that will never recover fail fast.

A script's exit code lands in sacct; a missing image fails the job (exit 125) with the
registry's reason in the output and on the job; the kernel's OOM kill is exit 137 with
OOMKilled in the footer; files a job writes on the NAS belong to the job's user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

RESULTS = Path("/mnt/test-k8s/results")
ALPINE = "nas-hub.local:5407/alpine:latest"
PYTHON = "nas-hub.local:5407/python:3"


def out_of(job_id: int, prefix: str) -> str:
    return (RESULTS / f"{prefix}-{job_id}.out").read_text()


def test_exit_code_reaches_sacct(jobs: Any) -> None:
    text = jobs.script(
        ALPINE, "echo about to fail; exit 3", "--mem=64M", f"-o {RESULTS}/exec-exit-%j.out"
    )
    job_id = jobs.submit("alice", text)
    assert jobs.wait_done(job_id) == ["FAILED", "3:0"]
    out = out_of(job_id, "exec-exit")
    assert "about to fail" in out
    assert out.rstrip().endswith("[slurm-k8s] outcome: Failed exit=3 reason=Error")


def test_missing_image_fails_fast_with_the_reason(jobs: Any) -> None:
    text = jobs.script(
        "nas-hub.local:5407/nope:1",
        "echo never runs",
        "--mem=64M",
        "--time=30",
        f"-o {RESULTS}/exec-image-%j.out",
    )
    job_id = jobs.submit("alice", text)
    state, code = jobs.wait_done(job_id, timeout=300)
    assert (state, code) == ("FAILED", "125:0")
    out = out_of(job_id, "exec-image")
    # The launcher pins the tag to a digest before making anything: no Pod, no pull.
    assert "[slurm-k8s] outcome: Failed exit=125 reason=Refused" in out
    assert "nas-hub.local:5407/nope:1 not found in the registry" in out
    comment, admin = jobs.sacct(job_id, "Comment,AdminComment")
    assert "not found in the registry" in comment + admin, (comment, admin)


def test_job_files_on_the_nas_belong_to_the_user(jobs: Any) -> None:
    target = RESULTS / "exec-owned-{id}.txt"
    text = jobs.script(
        ALPINE,
        f'echo "written by $(id -u)" > {RESULTS}/exec-owned-$SLURM_JOB_ID.txt',
        "--mem=64M",
        f"-o {RESULTS}/exec-owned-%j.out",
    )
    job_id = jobs.submit("alice", text)
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    written = Path(str(target).format(id=job_id))
    assert written.stat().st_uid == 2001
    assert written.stat().st_gid == 2001


def test_oom_kill_is_137_with_the_reason(jobs: Any) -> None:
    body = "x = bytearray(400 * 1024 * 1024)\nprint('should not get here')"
    text = (
        "#!/usr/bin/env python3\n"
        + jobs.script(PYTHON, body, "--mem=64M", f"-o {RESULTS}/exec-oom-%j.out").split("\n", 1)[1]
    )
    job_id = jobs.submit("alice", text)
    state, code = jobs.wait_done(job_id, timeout=300)
    # Slurm 22.05 records a batch exit status above 128 as status - 128 (plain
    # `sbatch --wrap 'exit 137'` shows 9:0 too); the footer has the container's 137.
    assert code in ("137:0", "9:0"), (state, code)
    assert state in ("FAILED", "OUT_OF_MEMORY")
    out = out_of(job_id, "exec-oom")
    assert "[slurm-k8s] outcome: Failed exit=137 reason=OOMKilled" in out
    assert "should not get here" not in out
