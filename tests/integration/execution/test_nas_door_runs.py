"""The seed's hello.sh through the NAS door, all the way: drop → receipt → Pod → output.

The submission tests stop at the receipt; this one lets the job run through the launcher,
the runner and the collector, as `make demo` does.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
ALICE = 2001


def test_hello_dropped_on_the_nas_runs_and_its_output_lands(
    nas_door: None, jobs: Any, run_as: Any, lab_env: dict[str, str], kube_core: Any
) -> None:
    nas = Path(lab_env["NAS_ROOT"])
    name = f"hello-{uuid.uuid4().hex[:8]}.sh"
    hello = (REPO / "examples" / "hello.sh").read_text()
    run_as(
        "alice",
        ["sh", "-c", 'cat > "$0"', str(nas / "slurm-jobs" / "submit" / name)],
        input=hello,
        check=True,
    )
    receipt_path = nas / "slurm-jobs" / "submitted" / f"{name}.receipt.json"
    jobs.wait_for("the receipt", receipt_path.is_file, timeout=120)
    receipt = json.loads(receipt_path.read_text())
    job_id = int(receipt["job_id"])
    jobs.submitted.append(job_id)

    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    out = Path(receipt["output_path"])
    assert out == nas / "results" / f"{job_id}.out"
    assert "Hello from Slurm-K8s!" in out.read_text()
    assert out.stat().st_uid == ALICE
    jobs.wait_for("the collector's summary", out.with_name(out.name + ".summary.json").is_file)
    jobs.wait_for("no Pod left", lambda: not jobs.pods(kube_core, job_id), timeout=120)
    for leftover in (out, out.with_name(out.name + ".summary.json"), receipt_path):
        leftover.unlink()
    (nas / "slurm-jobs" / "submitted" / name).unlink()
