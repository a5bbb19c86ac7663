"""The lab's Slurm: plain jobs run as their user on the lab node, with accounting, fair share
and four GPUs. Scripts here carry no #K8S_IMAGE line: such jobs stay plain Slurm jobs (the
agreed rule for the project's job_submit policy).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def _out(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def _submit(run_as: Any, user: str, nas_root: str, script: str, *opts: str) -> tuple[str, Path]:
    tag = uuid.uuid4().hex[:8]
    out = Path(nas_root) / "results" / f"labtest-{tag}-%j.out"
    proc = run_as(
        user,
        ["sbatch", "--parsable", f"--job-name=labtest-{tag}", f"--output={out}", *opts],
        input=script,
    )
    assert proc.returncode == 0, f"sbatch as {user} failed: {proc.stderr}"
    job_id = proc.stdout.strip().split(";")[0]
    return job_id, Path(str(out).replace("%j", job_id))


def _job_fields(job_id: str) -> dict[str, str]:
    """State and node of a job: from slurmctld while it remembers, else from accounting."""
    proc = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode == 0 and proc.stdout.strip():
        fields = dict(w.split("=", 1) for w in proc.stdout.split() if "=" in w)
        return {"state": fields["JobState"], "node": fields.get("NodeList", "")}
    line = _out(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,NodeList"]).strip()
    state, _, node = line.partition("|")
    return {"state": state.split()[0] if state else "UNKNOWN", "node": node}


def _finished(job_id: str, timeout: float = 90) -> dict[str, str]:
    fields: dict[str, str] = wait_for(
        f"job {job_id} to finish",
        lambda: (f := _job_fields(job_id))["state"] in TERMINAL and f,
        timeout=timeout,
        interval=0.5,
    )
    return fields


def _read_output(path: Path, timeout: float = 15) -> str:
    # The job is COMPLETED in slurmctld a moment before slurmstepd has flushed and closed it.
    wait_for(f"{path} written", path.exists, timeout=timeout, interval=0.2)
    return path.read_text()


PLAIN = "#!/bin/bash\nsleep 1; id -u\n"


@pytest.fixture(scope="module")
def ran_jobs(
    require: Any, lab_env: dict[str, str], run_as: Any
) -> dict[str, tuple[str, dict[str, str], Path]]:
    """One plain job by alice and one by bob, run to the end (shared by several tests)."""
    require("slurm")
    jobs = {u: _submit(run_as, u, lab_env["NAS_ROOT"], PLAIN) for u in ("alice", "bob")}
    return {u: (job_id, _finished(job_id), out) for u, (job_id, out) in jobs.items()}


def test_plain_job_runs_as_its_user_on_the_lab_node(
    slurm_ready: str, ran_jobs: dict[str, tuple[str, dict[str, str], Path]]
) -> None:
    job_id, fields, out = ran_jobs["alice"]
    assert fields == {"state": "COMPLETED", "node": slurm_ready}, f"job {job_id}"
    assert _read_output(out).split()[-1] == "2001"
    assert out.stat().st_uid == 2001


def test_jobs_are_accounted_to_their_user_and_account(
    ran_jobs: dict[str, tuple[str, dict[str, str], Path]],
) -> None:
    for user, (job_id, _, _) in ran_jobs.items():
        # slurmctld sends job records to slurmdbd asynchronously.
        line = wait_for(
            f"job {job_id} accounted",
            lambda job_id=job_id: (
                (out := _out(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "User,Account,State"]))
                .strip()
                .endswith("COMPLETED")
                and out
            ),
            timeout=30,
        )
        assert line.strip() == f"{user}|research|COMPLETED"


def test_scheduler_is_backfill_with_multifactor_priority(slurm_ready: str) -> None:
    config = {
        k.strip(): v.strip()
        for k, _, v in (
            line.partition("=") for line in _out(["scontrol", "show", "config"]).splitlines()
        )
    }
    assert config["SchedulerType"] == "sched/backfill"
    assert config["PriorityType"] == "priority/multifactor"
    assert config["AccountingStorageType"] == "accounting_storage/slurmdbd"


def test_fair_share_knows_alice_and_bob(
    ran_jobs: dict[str, tuple[str, dict[str, str], Path]],
) -> None:
    rows = [r.split("|") for r in _out(["sshare", "-a", "-n", "-P", "-o", "Account,User"]).split()]
    users = {user for account, user in rows if account.strip() == "research"}
    assert {"alice", "bob"} <= users


def test_node_has_four_gpus(slurm_ready: str) -> None:
    node = dict(
        w.split("=", 1)
        for w in _out(["scontrol", "-o", "show", "node", slurm_ready]).split()
        if "=" in w
    )
    assert node["Gres"].split("(")[0] == "gpu:4"
    assert "gres/gpu=4" in node["CfgTRES"]


def test_gpu_job_gets_its_gpus_and_they_are_accounted(
    slurm_ready: str, lab_env: dict[str, str], run_as: Any
) -> None:
    script = '#!/bin/bash\necho "gpus=$CUDA_VISIBLE_DEVICES"\n'
    job_id, out = _submit(run_as, "bob", lab_env["NAS_ROOT"], script, "--gres=gpu:2")
    assert _finished(job_id)["state"] == "COMPLETED"
    assert "gpus=0,1" in _read_output(out)
    tres = _out(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "AllocTRES"])
    assert "gres/gpu=2" in tres
