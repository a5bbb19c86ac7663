"""The seed's hello.sh run by the launcher and collector as Pods of ``k8s/overlays/lab``.

Plain ``sbatch`` as alice; the prolog's job.started reaches the in-cluster launcher, which
makes the job's Pod with its ServiceAccount's rights only; the epilog's job.ended reaches the
in-cluster collector, which writes the summary and removes the run. Their own logs (``kubectl
logs``) must show they did it, not some host process.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_for
from tests.integration.deploy.conftest import JOBS_NS, REPO, SYSTEM_NS, Kubectl
from tests.integration.execution.conftest import submit, wait_done

pytestmark = pytest.mark.integration

ALICE = 2001


def _events(kubectl: Kubectl, deployment: str) -> list[dict[str, Any]]:
    out = kubectl("logs", f"deployment/{deployment}", "-n", SYSTEM_NS, "--tail=-1").stdout
    events = []
    for line in out.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_in_cluster_launcher_and_collector_run_hello(
    deployed: None,
    kubectl: Kubectl,
    run_as: Callable[..., Any],
    lab_env: dict[str, str],
) -> None:
    hosts = subprocess.run(
        ["pgrep", "-f", r"-m services\.(launcher|collector)"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.split()
    assert not hosts, f"host launcher/collector processes would race the Pods: {hosts}"

    job_id = submit(run_as, "alice", REPO / "examples" / "hello.sh")
    try:
        assert wait_done(job_id) == ["COMPLETED", "0:0"]
        out = Path(lab_env["NAS_ROOT"]) / "results" / f"{job_id}.out"
        summary = out.with_name(out.name + ".summary.json")
        assert "Hello from Slurm-K8s!" in out.read_text()
        assert out.stat().st_uid == ALICE
        wait_for("the collector's summary", summary.is_file, timeout=120)
        assert summary.stat().st_uid == ALICE
        wait_for(
            "the run's objects to be gone",
            lambda: (
                not kubectl(
                    "get",
                    "pods,serviceaccounts",
                    "-n",
                    JOBS_NS,
                    "-l",
                    f"slurm-k8s.io/job-id={job_id}",
                    "-o",
                    "name",
                ).stdout.strip()
            ),
            timeout=120,
        )
        launched = [
            e
            for e in _events(kubectl, "launcher")
            if e.get("event") == "pod launched" and e.get("job_id") == job_id
        ]
        finished = [
            e
            for e in _events(kubectl, "collector")
            if e.get("event") == "run finished" and e.get("job_id") == job_id
        ]
        assert len(launched) == 1, "the in-cluster launcher did not make the Pod"
        assert len(finished) == 1, "the in-cluster collector did not finish the run"
        assert finished[0]["state"] == "COMPLETED"
    finally:
        subprocess.run(["scancel", str(job_id)], capture_output=True, timeout=30, check=False)
        results = Path(lab_env["NAS_ROOT"]) / "results"
        for leftover in (f"{job_id}.out", f"{job_id}.out.summary.json"):
            (results / leftover).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the job's results folder, empty for hello
            (results / str(job_id)).rmdir()
