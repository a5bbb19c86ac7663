"""Scheduling policy is Slurm's, and visible: backfill around busy GPUs, and fair share.

A real Pod job holds all 4 GPUs. A large job wanting the 4 GPUs waits (Resources or
Priority); a small, short, lower-priority CPU-only job starts ahead of it, because backfill
sees that it ends before the GPUs could free up. After alice has used the cluster, bob's job
that is otherwise equal to hers gets the higher priority, and ``sprio`` shows the FAIRSHARE
factor making the difference. The waiting jobs are plain Slurm jobs (no #K8S_ lines, so not
wrapped): the policy is the same for both kinds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

RESULTS = Path("/mnt/test-k8s/results")
ALPINE = "nas-hub.local:5407/alpine:latest"


def squeue(job_id: int, fmt: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", str(job_id), "-o", fmt],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout.strip()


def hold_all_gpus(jobs: Any, kube_core: Any, user: str = "alice") -> int:
    """A real Pod job holding gres gpu:4 for a few minutes; returns its id once it runs."""
    text = jobs.script(
        ALPINE,
        "echo holding the GPUs; sleep 400",
        "--gres=gpu:4",
        "-c 1",
        "--mem=64M",
        "--time=8",
        f"-o {RESULTS}/exec-hold-%j.out",
    )
    job_id = jobs.submit(user, text)

    def pod_running() -> bool:
        pod = jobs.pod(kube_core, f"job-{job_id}-r0")
        return pod is not None and pod.status.phase == "Running"

    jobs.wait_for("the GPU holder's Pod to run", pod_running, 180)
    return job_id


def plain(jobs: Any, user: str, *args: str) -> int:
    return jobs.submit(user, "#!/bin/sh\nsleep 5\n", "-o", "/dev/null", "--mem=64M", *args)


def test_small_job_backfills_ahead_of_a_large_one(jobs: Any, kube_core: Any) -> None:
    holder = hold_all_gpus(jobs, kube_core)
    large = plain(jobs, "bob", "--gres=gpu:4", "-c 1", "--time=5")
    small = plain(jobs, "bob", "-c 1", "--time=1", "--nice=5000")
    large_priority = int(squeue(large, "%Q") or 0)
    small_priority = int(squeue(small, "%Q") or 0)

    def small_started() -> str | None:
        state = jobs.state(small)
        return state if state in ("RUNNING", "COMPLETING", "COMPLETED", "") else None

    jobs.wait_for("the small job to start", small_started, 120)
    assert jobs.state(large) == "PENDING"
    # Right after submission the reason reads "None" until the main scheduler has looked.
    jobs.wait_for(
        "the large job's pending reason",
        lambda: squeue(large, "%r") in ("Resources", "Priority"),
        60,
    )
    assert jobs.state(holder) == "RUNNING"
    assert small_priority < large_priority, "the small job must have jumped the queue"
    record = jobs.show(small) or {}
    print(
        f"backfill: small job {small} (priority {small_priority}) started while large job "
        f"{large} (priority {large_priority}) waits; scheduler={record.get('Scheduler', '?')}"
    )
    assert jobs.wait_done(small)[0] == "COMPLETED"


def shares() -> dict[str, float]:
    out = subprocess.run(
        ["sshare", "-a", "-n", "-P", "-o", "User,FairShare"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    found: dict[str, float] = {}
    for line in out.splitlines():
        user, _, share = line.strip().partition("|")
        if user in ("alice", "bob") and share:
            found[user] = float(share)
    return found


def sprio(job_ids: list[int]) -> dict[int, tuple[int, int]]:
    """job id → (PRIORITY, FAIRSHARE) from sprio."""
    out = subprocess.run(
        ["sprio", "-h", "-j", ",".join(map(str, job_ids)), "-o", "%i|%Y|%F"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    rows: dict[int, tuple[int, int]] = {}
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) == 3 and cols[0].isdigit():
            rows[int(cols[0])] = (int(cols[1]), int(cols[2]))
    return rows


def test_fair_share_favours_the_lighter_user(jobs: Any, kube_core: Any) -> None:
    hold_all_gpus(jobs, kube_core, user="alice")
    # Usage reaches fair share at the next PriorityCalcPeriod (1 min on the lab): wait for it.
    jobs.wait_for(
        "alice's usage to lower her fair share below bob's",
        lambda: (s := shares()) and s.get("alice", 1.0) < s.get("bob", 0.0),
        180,
    )
    alice = plain(jobs, "alice", "--gres=gpu:4", "-c 1", "--time=2")
    bob = plain(jobs, "bob", "--gres=gpu:4", "-c 1", "--time=2")

    def both_listed() -> dict[int, tuple[int, int]] | None:
        rows = sprio([alice, bob])
        return rows if len(rows) == 2 else None

    factors = jobs.wait_for("sprio to list both waiting jobs", both_listed, 60)
    print(f"sprio (PRIORITY, FAIRSHARE): alice {factors[alice]}, bob {factors[bob]}")
    assert factors[bob][1] > factors[alice][1]
    assert factors[bob][0] > factors[alice][0]
    detail = subprocess.run(
        ["sprio", "-l", "-j", f"{alice},{bob}"], capture_output=True, text=True, check=False
    ).stdout
    assert "FAIRSHARE" in detail
