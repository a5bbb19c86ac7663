"""``slurmk8s check`` on the lab: every check passes with the services running, a stopped one
is named, and ``--smoke`` runs alice's hello job to a finished receipt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
# The package as the hooks' venv has it (lab/slurm/install-hooks.sh): readable by the users.
USER_CLI = "/opt/slurm-k8s/venv/bin/slurmk8s"


def _check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "check", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _passed(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str] | None:
    return done if done.returncode == 0 else None


def test_every_check_passes_and_a_stopped_service_is_named(
    nas_door: None, execution_services: Any
) -> None:
    env = execution_services.env
    # Services just (re)started take a moment to reach their queues.
    done = wait_for("every check to pass", lambda: _passed(_check(env, "--verbose")), timeout=60)
    lines = done.stdout.splitlines()
    assert lines[-1].endswith(" 0 failed")
    for expected in (
        "broker     reachable with the configured credentials",
        "services   validator consuming validator.file-detected",
        "services   launcher consuming launcher.job-started",
        "services   collector consuming collector.job-ended",
        "slurm      backfill scheduler",
        "slurm      multifactor priority",
        "slurm      job_submit.lua",
        "kubernetes namespace slurm-jobs enforces restricted",
        "kubernetes services' credentials may run jobs in slurm-jobs",
    ):
        assert any(expected in line for line in lines), expected
    print(done.stdout)

    execution_services.stop("collector")
    try:
        done = _check(env, "--component", "services", "--json")
    finally:
        execution_services.start("collector")
    assert done.returncode == 1
    failed = [r["name"] for r in json.loads(done.stdout) if not r["ok"]]
    assert failed == ["collector consuming collector.job-ended"]


def test_smoke_runs_a_hello_job_to_a_finished_receipt(
    nas_door: None, run_as: Any, lab_env: dict[str, str]
) -> None:
    done = run_as(
        "alice",
        ["env", f"NAS_ROOT={lab_env['NAS_ROOT']}", USER_CLI, "check", "--component", "smoke"],
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok   smoke      hello job ran end to end" in done.stdout
    print(done.stdout)
