"""The NAS door end to end on the lab: files dropped by alice in the real submit folder become
alice's Slurm jobs with receipts, or land in failed/ with an error file; nothing is left behind
and nothing is submitted twice.

Runs our own watcher and validator (``python -m services.<name>``) against the lab's NAS,
RabbitMQ and Slurm. If the lab's resident services are also running, ours share the work
with them (the second watcher stands by on the ledger lock; validators share the queue):
every assertion holds either way. File names carry a per-run id, so runs never collide.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.slurmctl import key_of
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RunAs = Callable[..., "subprocess.CompletedProcess[str]"]  # the conftest's run_as fixture
DEADLINE_S = 180.0
_READY = {"watcher": "watcher.configured", "validator": "consuming"}
"""A line each service logs once it is ready (the watcher has listed, the validator consumes)."""
HELLO = REPO / "examples" / "hello.sh"
HELLO_TEXT = (
    "#!/bin/bash\n"
    "#SBATCH --job-name=hello\n"
    "#SBATCH --cpus-per-task=1\n"
    "#SBATCH --mem=1G\n"
    "#SBATCH --output=/mnt/test-k8s/results/%j.out\n"
    "#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"
    "\n"
    'echo "Hello from Slurm-K8s!"\n'
)
# No #K8S_IMAGE and an identity-changing option: refused on two counts.
BAD_TEXT = "#!/bin/bash\n#SBATCH --uid=0\necho nope\n"


def drop_as(run_as: RunAs, user: str, path: Path, content: str) -> None:
    """Write a file in the submit folder as ``user`` (so the file is theirs)."""
    run_as(user, ["sh", "-c", 'cat > "$0"', str(path)], input=content, check=True)


def _slurm(*argv: str) -> str:
    done = subprocess.run(list(argv), capture_output=True, check=True, timeout=60, text=True)
    return done.stdout


@pytest.fixture(scope="module")
def lab(lab_env: dict[str, str], require: Callable[[str], None]) -> dict[str, str]:
    require("rabbitmq")
    require("slurm")
    submit = Path(lab_env["NAS_ROOT"]) / "slurm-jobs" / "submit"
    if not submit.is_dir():
        pytest.fail(f"{submit} is missing: is the lab's NAS up? (lab/nas/up.sh)")
    return lab_env


@pytest.fixture(scope="module")
def services(lab: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Our watcher and validator, running for the whole module."""
    logs = tmp_path_factory.mktemp("door-logs")
    env = {**os.environ, **lab, "LOG_FORMAT": "json"}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for name in ("watcher", "validator"):
        with (logs / f"{name}.log").open("ab") as out:
            procs.append(
                (
                    name,
                    subprocess.Popen(
                        [sys.executable, "-m", f"services.{name}"],
                        cwd=REPO,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    ),
                )
            )

    def started(name: str, proc: subprocess.Popen[bytes]) -> bool:
        text = (logs / f"{name}.log").read_text(errors="replace")
        if proc.poll() is not None:
            pytest.fail(f"{name} exited at start:\n{text[-3000:]}")
        return _READY[name] in text

    wait_for(
        "the watcher and the validator to start",
        lambda: all(started(name, proc) for name, proc in procs),
        timeout=60,
        interval=0.2,
    )
    yield
    for _name, proc in procs:
        proc.send_signal(signal.SIGTERM)
    for name, proc in procs:
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -9
        sys.stderr.write(f"--- {name} (exit {code}) ---\n")
        sys.stderr.write((logs / f"{name}.log").read_text()[-3000:])


@pytest.fixture
def jobs_dir(lab: dict[str, str]) -> Path:
    return Path(lab["NAS_ROOT"]) / "slurm-jobs"


@pytest.fixture
def run_id() -> str:
    return f"door-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def cancel_later() -> Iterator[Callable[[int], None]]:
    """Jobs to scancel at the end of the test, so the shared lab is left quiet."""
    ids: list[int] = []
    yield ids.append
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, timeout=60)


def _outcome(jobs: Path, name: str) -> str | None:
    """Where a dropped file ended: 'submitted', 'failed', or None while it is still on its way.

    The validator never overwrites, so a file keeps its name unless one was taken; with
    per-run names it is never taken.
    """
    if (jobs / "submitted" / f"{name}.receipt.json").is_file():
        return "submitted"
    if (jobs / "failed" / f"{name}.error").is_file():
        return "failed"
    return None


def _error_text(jobs: Path, name: str) -> str:
    error = jobs / "failed" / f"{name}.error"
    return error.read_text() if error.is_file() else "(no error file)"


def _receipt(jobs: Path, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((jobs / "submitted" / f"{name}.receipt.json").read_text())
    return data


def _tidy(jobs: Path, run_id: str) -> None:
    """Remove this run's files from submitted/ and failed/; called only when a test passed,
    so a failure leaves its evidence on the NAS."""
    for folder in (jobs / "submitted", jobs / "failed"):
        for path in folder.glob(f"{run_id}-*"):
            path.unlink()


def _job_user(job_id: int) -> str:
    text = _slurm("scontrol", "show", "job", str(job_id))
    # "UserId=alice(2001) GroupId=..."
    return text.split("UserId=", 1)[1].split("(", 1)[0]


def test_hello_dropped_by_alice_becomes_alices_job_with_a_receipt(
    services: None, run_as: RunAs, jobs_dir: Path, run_id: str, cancel_later: Callable[[int], None]
) -> None:
    name = f"{run_id}-hello.sh"
    content = HELLO.read_text() if HELLO.is_file() else HELLO_TEXT
    dropped = time.monotonic()
    drop_as(run_as, "alice", jobs_dir / "submit" / name, content)
    wait_for(f"{name} to be handled", lambda: _outcome(jobs_dir, name), timeout=DEADLINE_S)
    print(f"\nmeasured: hello.sh dropped -> receipt in {time.monotonic() - dropped:.2f} s")
    assert _outcome(jobs_dir, name) == "submitted", _error_text(jobs_dir, name)
    receipt = _receipt(jobs_dir, name)
    job_id = int(str(receipt["job_id"]))
    cancel_later(job_id)
    assert receipt["user"] == "alice"
    assert _job_user(job_id) == "alice"
    assert (jobs_dir / "submitted" / name).read_text() == content
    assert not (jobs_dir / "submit" / name).exists()
    _tidy(jobs_dir, run_id)


def test_a_file_in_a_users_sub_folder_is_submitted_too(
    services: None,
    run_as: RunAs,
    jobs_dir: Path,
    run_id: str,
    cancel_later: Callable[[int], None],
) -> None:
    folder = jobs_dir / "submit" / f"{run_id}-alice"
    run_as("alice", ["mkdir", str(folder)], check=True)
    name = f"{run_id}-nested.sh"
    drop_as(run_as, "alice", folder / name, HELLO_TEXT)
    wait_for(f"{name} to be handled", lambda: _outcome(jobs_dir, name), timeout=DEADLINE_S)
    assert _outcome(jobs_dir, name) == "submitted", _error_text(jobs_dir, name)
    job_id = int(str(_receipt(jobs_dir, name)["job_id"]))
    cancel_later(job_id)
    assert _job_user(job_id) == "alice"
    run_as("alice", ["rmdir", str(folder)], check=True)
    _tidy(jobs_dir, run_id)


def test_a_bad_file_lands_in_failed_with_its_reasons(
    services: None, run_as: RunAs, jobs_dir: Path, run_id: str
) -> None:
    name = f"{run_id}-bad.sh"
    drop_as(run_as, "alice", jobs_dir / "submit" / name, BAD_TEXT)
    wait_for(f"{name} to be handled", lambda: _outcome(jobs_dir, name), timeout=DEADLINE_S)
    assert _outcome(jobs_dir, name) == "failed"
    error = (jobs_dir / "failed" / f"{name}.error").read_text()
    assert "K8S_IMAGE" in error
    assert "uid" in error
    assert (jobs_dir / "failed" / name).read_text() == BAD_TEXT
    assert not (jobs_dir / "submit" / name).exists()
    _tidy(jobs_dir, run_id)


def test_a_hundred_files_at_once_are_each_accounted_for_once(
    services: None, run_as: RunAs, jobs_dir: Path, run_id: str, cancel_later: Callable[[int], None]
) -> None:
    good = {
        f"{run_id}-{n:03}-good.sh": HELLO_TEXT.replace(
            "#SBATCH --job-name=hello\n", f"#SBATCH --job-name=bulk{n}\n#SBATCH --hold\n"
        )
        for n in range(70)
    }
    bad = {f"{run_id}-{n:03}-bad.sh": BAD_TEXT + f"# {n}\n" for n in range(70, 100)}
    files = {**good, **bad}
    # Written into a hidden staging folder first, then moved in by one `mv`: "at once".
    staging = jobs_dir / "submit" / f".{run_id}"
    run_as("alice", ["mkdir", str(staging)], check=True)
    for name, content in files.items():
        drop_as(run_as, "alice", staging / name, content)
    started = time.monotonic()
    run_as("alice", ["sh", "-c", 'mv "$0"/* "$0/.." && rmdir "$0"', str(staging)], check=True)

    def outcomes() -> dict[str, str | None]:
        return {name: _outcome(jobs_dir, name) for name in files}

    try:
        wait_for("all 100 files handled", lambda: None not in outcomes().values(), timeout=600)
    finally:
        for name in good:
            receipt = jobs_dir / "submitted" / f"{name}.receipt.json"
            if receipt.is_file():
                cancel_later(int(json.loads(receipt.read_text())["job_id"]))
    elapsed = time.monotonic() - started
    print(f"\nmeasured: 100 files (70 good, 30 bad) dropped -> all handled in {elapsed:.1f} s")
    final = outcomes()
    assert {n for n, o in final.items() if o == "submitted"} == set(good)
    assert {n for n, o in final.items() if o == "failed"} == set(bad)
    for name in files:  # exactly one place each, nothing left behind
        assert not (jobs_dir / "submit" / name).exists()
        in_submitted = (jobs_dir / "submitted" / name).exists()
        in_failed = (jobs_dir / "failed" / name).exists()
        assert in_submitted != in_failed, name
    job_ids = [int(str(_receipt(jobs_dir, name)["job_id"])) for name in good]
    assert len(set(job_ids)) == len(good)
    # One Slurm job per file: every key of this run appears on exactly one job.
    keys = {str(_receipt(jobs_dir, name)["submission_key"]) for name in good}
    listing = _slurm("squeue", "--all", "--noheader", "--format=%i|%k", "-u", "alice")
    comments = [line.split("|", 1)[1].strip() for line in listing.splitlines() if "|" in line]
    ours = [key for key in map(key_of, comments) if key in keys]
    assert len(ours) == len(set(ours)) == len(good)
    _tidy(jobs_dir, run_id)
