"""The validator's handler against the lab's real Slurm, and the plain sbatch door beside it.

Every case of ``tests/data/submission_cases.json`` goes through both doors: the NAS door (the
handler with real sbatch as alice) and ``runuser -u alice -- sbatch`` (job_submit.lua installed
by the lab). Both must give the same verdict. Files are dropped in a private NAS tree (so a
resident watcher never sees them); homes and results are the lab's real ones, because that is
where the policy lets jobs write.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from services.validator.filing import Journal
from services.validator.handlers import ValidatorDeps, ValidatorHandler, submission_key
from shared.config import NasSettings
from shared.errors import TransientError
from shared.jobscript import load_policy
from shared.messages import Envelope, FileDetected, JobRejected, JobSubmitted
from shared.slurmctl import COMMENT_PREFIX, Submitter
from tests.integration.conftest import lab_unavailable

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CASES = json.loads((REPO / "tests" / "data" / "submission_cases.json").read_text())
ALICE = "alice"
# sbatch refuses these itself, before job_submit.lua sees them: same verdict, its own words.
CLIENT_SIDE = {"no-shebang", "bom", "crlf", "nul", "uid", "abbreviated-uid"}


def script_of(case: dict[str, Any]) -> bytes:
    text = case["script"] + ("# " + "x" * 97 + "\n") * case.get("pad_lines", 0)
    return text.encode()


def reports(case: dict[str, Any], text: str, prefix: str = "") -> bool:
    """Whether every expected (line, words) pair of the case is on a line of ``text``."""
    lines = text.splitlines()
    for line, words in case["expect"]:
        where = f"{prefix}{'line ' + str(line) if line else 'file'}: "
        if not any(got.startswith(where) and words in got for got in lines):
            return False
    return True


@pytest.fixture(scope="module")
def nas_root(lab_env: dict[str, str]) -> Path:
    return Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s"))


@pytest.fixture(scope="module")
def tree(nas_root: Path) -> Iterator[NasSettings]:
    """A private slurm-jobs tree on the lab's NAS, removed afterwards."""
    if os.geteuid() != 0:
        lab_unavailable("needs root (files are given to alice, sbatch runs through runuser)")
    root = nas_root / f".validator-test-{uuid.uuid4().hex[:8]}"
    settings = NasSettings(NAS_ROOT=root)
    for d in (settings.submit_dir, settings.failed_dir, settings.submitted_dir):
        d.mkdir(parents=True)
    yield settings
    shutil.rmtree(root, ignore_errors=True)


def account(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@pytest.fixture
def deps(
    slurm_ready: str, lab_env: dict[str, str], tree: NasSettings, nas_root: Path
) -> ValidatorDeps:
    policy_file = Path(lab_env.get("SLURMK8S_POLICY", "/etc/slurm-k8s/policy.conf"))
    return ValidatorDeps(
        policy=load_policy(policy_file),
        nas=tree,
        slurm=Submitter(
            timeout_s=60,
            query_timeout_s=30,
            lookback_days=7,
            slurm_conf=lab_env.get("SLURM_CONF"),
        ),
        journal=Journal(tree.state_dir / "validator"),
        accounts=account,
        home_of=lambda user: nas_root / "home" / user,
    )


@pytest.fixture
def cancel_later() -> Iterator[Callable[[int], None]]:
    """Jobs are scancelled at the end, so the shared lab stays quiet."""
    ids: list[int] = []
    yield ids.append
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, timeout=60)


def drop(tree: NasSettings, name: str, data: bytes, user: str = ALICE) -> Envelope:
    """A file in the submit folder owned by ``user``, and the watcher's event for it."""
    path = tree.submit_dir / f"{uuid.uuid4().hex[:6]}-{name}"
    path.write_bytes(data)
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    st = path.stat()
    return Envelope.wrap(
        FileDetected(
            path=str(path),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            sha256=hashlib.sha256(data).hexdigest(),
            owner_uid=st.st_uid,
        )
    )


def sbatch_as_alice(
    nas_root: Path, data: bytes, *options: str
) -> subprocess.CompletedProcess[bytes]:
    """Plain sbatch, as a user would run it from their NAS home, script on stdin."""
    return subprocess.run(
        ["runuser", "-u", ALICE, "--", "sbatch", *options],
        input=data,
        cwd=nas_root / "home" / ALICE,
        capture_output=True,
        timeout=120,
        check=False,
        env={"PATH": os.environ["PATH"], "SLURM_CONF": os.environ.get("SLURM_CONF", "")},
    )


def jobs_with_key(key: str) -> list[str]:
    """Distinct Slurm jobs carrying the key (array tasks count as their job)."""
    listing = subprocess.run(
        ["squeue", "--all", "--states=all", "--noheader", "--format=%i|%k"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    found = {
        line.split("|")[0].split("_")[0]
        for line in listing.splitlines()
        if line.endswith(COMMENT_PREFIX + key)
    }
    return sorted(found)


def show_job(job_id: int) -> str:
    return subprocess.run(
        ["scontrol", "show", "job", str(job_id)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


@pytest.mark.parametrize("case", CASES["bad"], ids=lambda c: c["name"])
def test_bad_case_is_refused_by_both_doors(
    case: dict[str, Any], deps: ValidatorDeps, tree: NasSettings, nas_root: Path
) -> None:
    data = script_of(case)
    # NAS door
    [out] = ValidatorHandler(deps)(drop(tree, f"{case['name']}.sh", data))
    assert isinstance(out.body, JobRejected)
    error = Path(out.body.error_path).read_text()
    assert reports(case, error), error
    assert Path(out.body.failed_path).read_bytes() == data
    assert Path(out.body.error_path).stat().st_uid == pwd.getpwnam(ALICE).pw_uid
    # sbatch door: --test-only still runs job_submit.lua, and never makes a job
    done = sbatch_as_alice(nas_root, data, "--test-only")
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode != 0, stderr
    if case["name"] not in CLIENT_SIDE:
        assert reports(case, stderr, prefix="sbatch: error: "), stderr


@pytest.mark.parametrize("case", CASES["good"], ids=lambda c: c["name"])
def test_good_case_is_accepted_by_both_doors(
    case: dict[str, Any],
    deps: ValidatorDeps,
    tree: NasSettings,
    nas_root: Path,
    cancel_later: Callable[[int], None],
) -> None:
    data = script_of(case)
    event = drop(tree, f"{case['name']}.sh", data)
    [out] = ValidatorHandler(deps)(event)
    assert isinstance(out.body, JobSubmitted), getattr(out.body, "problems", None)
    cancel_later(out.body.job_id)
    assert "UserId=alice(" in show_job(out.body.job_id)
    receipt = json.loads(Path(out.body.receipt_path).read_text())
    assert receipt["job_id"] == out.body.job_id
    assert receipt["user"] == ALICE
    assert "%j" not in receipt["output_path"]
    assert len(jobs_with_key(submission_key(event.body))) == 1  # type: ignore[arg-type]
    done = sbatch_as_alice(nas_root, data, "--parsable")
    assert done.returncode == 0, done.stderr.decode()
    job_id = int(done.stdout.decode().strip().split(";")[0])
    cancel_later(job_id)
    assert "UserId=alice(" in show_job(job_id)


def test_hello_is_wrapped_and_its_receipt_names_the_output(
    deps: ValidatorDeps, tree: NasSettings, cancel_later: Callable[[int], None]
) -> None:
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    [out] = ValidatorHandler(deps)(drop(tree, "hello.sh", hello))
    assert isinstance(out.body, JobSubmitted)
    cancel_later(out.body.job_id)
    assert out.body.output_path == f"/mnt/test-k8s/results/{out.body.job_id}.out"
    batch = subprocess.run(
        ["scontrol", "write", "batch_script", str(out.body.job_id), "-"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    from shared.jobscript import extract_original_script

    assert extract_original_script(batch) == hello


def test_redelivered_message_makes_no_second_job(
    deps: ValidatorDeps, tree: NasSettings, cancel_later: Callable[[int], None]
) -> None:
    event = drop(tree, "hello.sh", (REPO / "examples" / "hello.sh").read_bytes())
    [first] = ValidatorHandler(deps)(event)
    [again] = ValidatorHandler(deps)(event)
    assert isinstance(first.body, JobSubmitted)
    cancel_later(first.body.job_id)
    assert again == first
    assert len(jobs_with_key(submission_key(event.body))) == 1  # type: ignore[arg-type]


class Crash(BaseException):
    """Stands for the process dying: nothing after the seam runs."""


@pytest.mark.parametrize("step", ["after-sbatch", "after-journal", "after-move"])
def test_crash_after_sbatch_then_redelivery_makes_no_second_job(
    step: str, deps: ValidatorDeps, tree: NasSettings, cancel_later: Callable[[int], None]
) -> None:
    def crash(at: str) -> None:
        if at == step:
            raise Crash(at)

    event = drop(tree, "hello.sh", (REPO / "examples" / "hello.sh").read_bytes())
    with pytest.raises(Crash):
        ValidatorHandler(replace(deps, fault=crash))(event)
    # "after-sbatch": the journal never heard of the job; Slurm's comment is what finds it.
    [out] = ValidatorHandler(deps)(event)
    assert isinstance(out.body, JobSubmitted)
    cancel_later(out.body.job_id)
    assert len(jobs_with_key(submission_key(event.body))) == 1  # type: ignore[arg-type]
    assert not Path(event.body.path).exists()  # type: ignore[attr-defined]


def _slurmctld_pid() -> int:
    done = subprocess.run(["pidof", "slurmctld"], capture_output=True, text=True, check=False)
    pids = done.stdout.split()
    if len(pids) != 1:
        lab_unavailable(f"cannot tell which slurmctld to pause: {done.stdout!r}")
    return int(pids[0])


class PausingSlurm(Submitter):
    """Real Slurm, but slurmctld is paused (SIGSTOP) just before sbatch runs.

    Pausing after the key lookup makes sbatch itself meet the unresponsive controller, which
    is the failure this test is about. SIGSTOP is not a shutdown: slurmctld keeps its state
    and resumes where it was, and sbatch sees what a hung or overloaded controller looks like.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(timeout_s=15, query_timeout_s=15, lookback_days=7)
        self.pid = pid
        self.paused = False

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True
        return super().submit(script, user=user, key=key, cwd=cwd, job_name=job_name)


def test_slurmctld_not_answering_is_transient_and_the_file_waits(
    deps: ValidatorDeps, tree: NasSettings, cancel_later: Callable[[int], None]
) -> None:
    event = drop(tree, "hello.sh", (REPO / "examples" / "hello.sh").read_bytes())
    key = submission_key(event.body)  # type: ignore[arg-type]
    pausing = PausingSlurm(_slurmctld_pid())
    try:
        with pytest.raises(TransientError):
            ValidatorHandler(replace(deps, slurm=pausing))(event)
    finally:
        os.kill(pausing.pid, signal.SIGCONT)
    assert pausing.paused, "sbatch was never reached"
    assert Path(event.body.path).exists()  # type: ignore[attr-defined]
    # The retries, as the consumer adapter would make them: the stalled submission may reach
    # slurmctld after it resumes, right beside our retry; either way there is one job.
    [out] = handle_with_retries(ValidatorHandler(deps), event)
    assert isinstance(out.body, JobSubmitted)
    cancel_later(out.body.job_id)
    assert len(jobs_with_key(key)) == 1


def handle_with_retries(
    handler: ValidatorHandler, event: Envelope, attempts: int = 10
) -> Sequence[Envelope]:
    """What the consumer adapter does with TransientError: wait, then deliver again."""
    for _ in range(attempts - 1):
        try:
            return handler(event)
        except TransientError as exc:
            time.sleep(exc.delay or 1.0)
    return handler(event)
