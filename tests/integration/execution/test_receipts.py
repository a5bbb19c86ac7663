"""A receipt on the NAS follows its job: queued → running (node, Pod) → finished.

The user who only sees the folder learns from ``submitted/<name>.receipt.json`` where the job
ran and how it ended; the file stays theirs (owner, mode 0644) through every rewrite.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

ALICE = 2001
ORDER = ("queued", "running", "finished")


def test_the_receipt_says_running_then_finished(
    nas_door: None, jobs: Any, run_as: Any, lab_env: dict[str, str], kube_core: Any
) -> None:
    nas = Path(lab_env["NAS_ROOT"])
    name = f"receipt-{uuid.uuid4().hex[:8]}.sh"
    script = jobs.script(
        "nas-hub.local:5407/alpine:latest",
        "echo hi; sleep 3",
        "--time=5",
        f"-o {nas}/results/%j.out",
    )
    run_as(
        "alice",
        ["sh", "-c", 'cat > "$0"', str(nas / "slurm-jobs" / "submit" / name)],
        input=script,
        check=True,
    )
    receipt_path = nas / "slurm-jobs" / "submitted" / f"{name}.receipt.json"
    seen: list[str] = []

    def status() -> dict[str, Any] | None:
        try:
            receipt: dict[str, Any] = json.loads(receipt_path.read_text())
        except (FileNotFoundError, ValueError):
            return None  # not filed yet (a rename never shows half a file)
        if not seen or seen[-1] != receipt["status"]:
            seen.append(receipt["status"])
            if receipt["status"] == "queued":
                jobs.submitted.append(int(receipt["job_id"]))
        return receipt if receipt["status"] == "finished" else None

    # Polled often: a short job is running for only a few seconds.
    receipt = wait_for("the receipt to say finished", status, timeout=240, interval=0.2)
    job_id = int(receipt["job_id"])
    assert seen == sorted(seen, key=ORDER.index), seen  # never backwards
    assert receipt["node"] == jobs.node
    assert receipt["pod"] == f"slurm-jobs/job-{job_id}-r0"
    assert receipt["state"] in ("COMPLETED", "FAILED")
    assert isinstance(receipt["exit_code"], int)
    out = Path(receipt["output_path"])
    assert out == nas / "results" / f"{job_id}.out"
    assert receipt["summary_path"] == f"{out}.summary.json"
    assert Path(receipt["summary_path"]).is_file()
    assert receipt["running_at"] <= receipt["finished_at"]
    st = receipt_path.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (ALICE, 0o644)
    assert not [p for p in receipt_path.parent.iterdir() if p.name.startswith(".tmp-")]
    print(f"receipt statuses seen: {' → '.join(seen)}; {receipt['state']} {receipt['exit_code']}")
    jobs.wait_for("no Pod left", lambda: not jobs.pods(kube_core, job_id), timeout=120)
    for leftover in (out, Path(receipt["summary_path"]), receipt_path):
        leftover.unlink(missing_ok=True)
    (nas / "slurm-jobs" / "submitted" / name).unlink(missing_ok=True)
