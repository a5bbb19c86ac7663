"""One job dropped on the NAS is one trace, from the watcher's detection to the collector.

Every service runs with ``OTEL_TRACES_EXPORTER=file`` into one JSON-lines file; the context
crosses Slurm in the job's comment (``shared.jobtrace``) and the hooks' spool, so the
launcher's and the collector's spans hang under the validator's, which hangs under the
watcher's root.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("watcher", "validator", "launcher", "collector")


@pytest.fixture
def traced(execution_services: Any, tmp_path: Path) -> Iterator[Path]:
    """All four services exporting spans to one file; the session's services put back after."""
    spans = tmp_path / "spans.jsonl"
    for name in SERVICES:
        execution_services.stop(name)
    saved = dict(execution_services.env)
    execution_services.env.update(OTEL_TRACES_EXPORTER="file", OTEL_TRACES_FILE=str(spans))
    try:
        for name in SERVICES:
            execution_services.start(name)
        yield spans
    finally:
        for name in SERVICES:
            execution_services.stop(name)
        execution_services.env.clear()
        execution_services.env.update(saved)
        for name in ("launcher", "collector"):
            execution_services.start(name)


def _spans(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_one_job_is_one_trace_from_the_watcher_to_the_collector(
    traced: Path, jobs: Any, run_as: Any, lab_env: dict[str, str], kube_core: Any
) -> None:
    nas = Path(lab_env["NAS_ROOT"])
    name = f"traced-{uuid.uuid4().hex[:8]}.sh"
    source = nas / "slurm-jobs" / "submit" / name
    hello = (REPO / "examples" / "hello.sh").read_text()
    run_as("alice", ["sh", "-c", 'cat > "$0"', str(source)], input=hello, check=True)
    receipt_path = nas / "slurm-jobs" / "submitted" / f"{name}.receipt.json"
    jobs.wait_for("the receipt", receipt_path.is_file, timeout=120)
    job_id = int(json.loads(receipt_path.read_text())["job_id"])
    jobs.submitted.append(job_id)
    jobs.wait_done(job_id)  # how it ended does not matter here, only that it did

    def root() -> dict[str, Any] | None:
        return next(
            (
                s
                for s in _spans(traced)
                if s["name"] == "watcher file.detected"
                and s["attributes"].get("file.path") == str(source)
            ),
            None,
        )

    trace_id = jobs.wait_for("the watcher's span", root, timeout=30)["trace_id"]

    def collected() -> list[dict[str, Any]] | None:
        mine = [s for s in _spans(traced) if s["trace_id"] == trace_id]
        done = any(
            s["name"] == "collector.job-ended process" and s["status"] != "ERROR" for s in mine
        )
        return mine if done else None

    trace = jobs.wait_for("the collector's span in the job's trace", collected, timeout=180)
    trace.sort(key=lambda s: s["start_ns"])
    by_id = {s["span_id"]: s for s in trace}

    def first(name: str) -> dict[str, Any]:
        return next(s for s in trace if s["name"] == name)

    watcher = first("watcher file.detected")
    validator = first("validator.file-detected process")
    launcher = first("launcher.job-started process")
    collector = first("collector.job-ended process")
    assert [s["service"] for s in (watcher, validator, launcher, collector)] == list(SERVICES)
    assert watcher["start_ns"] < validator["start_ns"] < launcher["start_ns"]
    assert launcher["start_ns"] < collector["start_ns"]
    # The watcher's span is the root; every other span descends from it.
    assert watcher["parent_span_id"] is None
    for span in trace:
        if span is not watcher:
            assert span["parent_span_id"] in by_id, span
    # Across Slurm: the job's comment carried the validator's span to the prolog and epilog.
    assert launcher["parent_span_id"] == validator["span_id"]
    assert collector["parent_span_id"] == validator["span_id"]
    assert launcher["attributes"]["slurmk8s.key"] == f"{job_id}:r0"
    print(
        "trace:",
        " → ".join(f"{s['service']}:{s['name']}" for s in trace),
    )
    out = nas / "results" / f"{job_id}.out"
    jobs.wait_for("no Pod left", lambda: not jobs.pods(kube_core, job_id), timeout=120)
    for leftover in (out, out.with_name(out.name + ".summary.json"), receipt_path):
        leftover.unlink(missing_ok=True)
    (nas / "slurm-jobs" / "submitted" / name).unlink(missing_ok=True)
