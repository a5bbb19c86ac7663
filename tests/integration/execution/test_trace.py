"""One job dropped on the NAS is one trace, from the watcher's detection to the collector.

Every service runs with ``OTEL_TRACES_EXPORTER=file`` into one JSON-lines file; the context
crosses Slurm in the job's comment (``shared.jobtrace``) and the hooks' spool, so the
launcher's and the collector's spans hang under the validator's, which hangs under the
watcher's root. Each service also serves its metrics page (``METRICS_PORT``), read after the
job, and logs JSON (``LOG_FORMAT=json``): every line of every service must parse as one JSON
object, and the job's lines carry its trace id.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("watcher", "validator", "launcher", "collector")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


PORTS: dict[str, int] = {}


def _metrics(service: str) -> str:
    url = f"http://127.0.0.1:{PORTS[service]}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        page: str = response.read().decode()
        return page


@pytest.fixture
def traced(execution_services: Any, tmp_path: Path) -> Iterator[Path]:
    """All four services exporting spans to one file; the session's services put back after."""
    spans = tmp_path / "spans.jsonl"
    for name in SERVICES:
        execution_services.stop(name)
    saved, saved_logs = dict(execution_services.env), dict(execution_services.logs)
    execution_services.env.update(
        OTEL_TRACES_EXPORTER="file", OTEL_TRACES_FILE=str(spans), LOG_FORMAT="json"
    )
    try:
        for name in SERVICES:
            execution_services.logs[name] = tmp_path / f"{name}.log"
            PORTS[name] = _free_port()
            execution_services.env["METRICS_PORT"] = str(PORTS[name])
            execution_services.start(name)
        yield spans
    finally:
        for name in SERVICES:
            execution_services.stop(name)
        execution_services.env.clear()
        execution_services.env.update(saved)
        execution_services.logs.clear()
        execution_services.logs.update(saved_logs)
        for name in ("launcher", "collector"):
            execution_services.start(name)


def _spans(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_one_job_is_one_trace_from_the_watcher_to_the_collector(
    traced: Path,
    jobs: Any,
    run_as: Any,
    lab_env: dict[str, str],
    kube_core: Any,
    execution_services: Any,
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
    pages = {name: _metrics(name) for name in SERVICES}
    # At least this job (files left in submit/ by others may count too).
    for service, line in (
        ("watcher", "slurmk8s_files_seen_total"),
        ("validator", "slurmk8s_submissions_total"),
        ("launcher", "slurmk8s_pods_launched_total"),
        ("launcher", "slurmk8s_launch_latency_seconds_count"),
        ("collector", "slurmk8s_cleanup_latency_seconds_count"),
    ):
        found = re.search(rf"^{line} (\S+)$", pages[service], re.MULTILINE)
        assert found is not None, (service, line)
        assert float(found.group(1)) >= 1, (service, line)
    assert 'slurmk8s_queue_depth{queue="collector.job-ended"}' in pages["collector"]
    # Logs: nothing but JSON objects, library lines included; the job's lines in its trace.
    job_lines = []
    for service in SERVICES:
        for line in execution_services.log(service).splitlines():
            record = json.loads(line)  # a plain-text line fails here
            assert isinstance(record, dict), line
            assert record["service"] == service
            if record.get("job_id") == job_id:
                job_lines.append(record)
    # The launcher handles only the job.started that crossed Slurm; the collector also its
    # own observer's pod.finished, which starts a trace of its own.
    launcher = [r for r in job_lines if r["service"] == "launcher" and "trace_id" in r]
    assert launcher
    assert all(r["trace_id"] == trace_id for r in launcher), launcher
    assert any(r["service"] == "collector" and r.get("trace_id") == trace_id for r in job_lines)
    # The consumer's line for each event that crossed Slurm names the job's trace too.
    crossed = [r for r in job_lines if r.get("type") in ("job.started", "job.ended")]
    assert {r["type"] for r in crossed} == {"job.started", "job.ended"}
    assert all(r["trace_id"] == trace_id for r in crossed), crossed
    out = nas / "results" / f"{job_id}.out"
    jobs.wait_for("no Pod left", lambda: not jobs.pods(kube_core, job_id), timeout=120)
    for leftover in (out, out.with_name(out.name + ".summary.json"), receipt_path):
        leftover.unlink(missing_ok=True)
    (nas / "slurm-jobs" / "submitted" / name).unlink(missing_ok=True)
