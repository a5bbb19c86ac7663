import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.validator import handlers
from services.validator.__main__ import run_all
from services.validator.filing import BIRTH_MARK, Journal
from services.validator.handlers import ValidatorDeps, ValidatorHandler, submission_key
from shared.config import NasSettings
from shared.errors import PermanentError, TransientError
from shared.jobscript.policy import REPO_PATH, load_policy
from shared.jobscript.validation import Problem
from shared.messages import Envelope, FileDetected, JobRejected, JobStarted, JobSubmitted
from shared.slurmctl import SubmitRefused

pytestmark = pytest.mark.unit

ALICE = 2001
REPO = Path(__file__).parents[4]
HELLO = (REPO / "examples" / "hello.sh").read_bytes()
NOW = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


@dataclass
class FakeSlurm:
    jobs: dict[str, int] = field(default_factory=dict)  # key -> job id
    submitted: list[tuple[bytes, str, str, Path, str]] = field(default_factory=list)
    fail: Exception | None = None

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        if self.fail is not None:
            raise self.fail
        self.submitted.append((script, user, key, cwd, job_name))
        self.jobs[key] = 100 + len(self.submitted)
        return self.jobs[key]

    lookups: list[bool] = field(default_factory=list)

    def find_job(self, *, user: str, key: str, attempted: bool) -> int | None:
        self.lookups.append(attempted)
        return self.jobs.get(key)

    def stdout_path(self, job_id: int, *, user: str, name: str) -> str | None:
        return None


class Crash(Exception):
    pass


@pytest.fixture
def nas(tmp_path: Path) -> NasSettings:
    settings = NasSettings(NAS_ROOT=tmp_path)
    for d in (settings.submit_dir, settings.failed_dir, settings.submitted_dir):
        d.mkdir(parents=True)
    (tmp_path / "home" / "alice").mkdir(parents=True)
    return settings


def make_deps(nas: NasSettings, slurm: FakeSlurm, crash_at: str = "") -> ValidatorDeps:
    def fault(step: str) -> None:
        if step == crash_at:
            raise Crash(step)

    return ValidatorDeps(
        policy=load_policy(REPO_PATH),
        nas=nas,
        slurm=slurm,
        journal=Journal(nas.state_dir / "validator"),
        accounts={ALICE: "alice", 0: "root"}.get,
        now=lambda: NOW,
        syntax=None,
        fault=fault,
    )


def drop(nas: NasSettings, name: str, data: bytes, uid: int = ALICE) -> Envelope:
    path = nas.submit_dir / name
    path.write_bytes(data)
    os.chown(path, uid, uid)
    return drop_event(path, data, uid)


def drop_event(path: Path, data: bytes, uid: int = ALICE) -> Envelope:
    st = path.stat()
    return Envelope.wrap(
        FileDetected(
            path=str(path),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            sha256=hashlib.sha256(data).hexdigest(),
            owner_uid=uid,
        )
    )


def test_good_file_is_submitted_as_owner_with_receipt(nas: NasSettings) -> None:
    slurm = FakeSlurm()
    event = drop(nas, "hello.sh", HELLO)
    [out] = ValidatorHandler(make_deps(nas, slurm))(event)
    assert isinstance(out.body, JobSubmitted)
    script, user, key, cwd, job_name = slurm.submitted[0]
    assert (script, user, cwd) == (HELLO, "alice", nas.nas_root / "home" / "alice")
    assert key == submission_key(event.body)  # type: ignore[arg-type]
    assert job_name == ""  # the script names itself
    moved = nas.submitted_dir / "hello.sh"
    receipt = json.loads((nas.submitted_dir / "hello.sh.receipt.json").read_text())
    assert not (nas.submit_dir / "hello.sh").exists()
    assert moved.stat().st_uid == ALICE
    assert (nas.submitted_dir / "hello.sh.receipt.json").stat().st_uid == ALICE
    assert receipt["job_id"] == out.body.job_id == 101
    assert receipt["user"] == "alice"
    assert receipt["output_path"] == "/mnt/test-k8s/results/101.out"
    assert receipt["submitted_at"] == NOW.isoformat()
    assert receipt["k8s_script"] == ""  # the file names no #K8S_SCRIPT


def test_bad_file_goes_to_failed_with_every_reason(nas: NasSettings) -> None:
    slurm = FakeSlurm()
    data = b"#!/bin/bash\n#SBATCH --uid=0 -c 64\n#K8S_IMAGE=docker.io/x\necho\n"
    [out] = ValidatorHandler(make_deps(nas, slurm))(drop(nas, "bad.sh", data))
    assert isinstance(out.body, JobRejected)
    assert slurm.submitted == []
    lines = (nas.failed_dir / "bad.sh.error").read_text().splitlines()
    assert lines[0] == "slurm-k8s did not submit bad.sh: 3 problem(s) to fix"
    assert lines[1:] == [
        "line 2: --uid is not allowed: it changes who the job runs as",
        "line 2: asks for 64 CPUs; the limit is 2",
        "line 3: #K8S_IMAGE registry 'docker.io' is not allowed (allowed: nas-hub.local:5407)",
    ]
    assert (nas.failed_dir / "bad.sh").read_bytes() == data
    assert (nas.failed_dir / "bad.sh.error").stat().st_uid == ALICE


def test_same_name_never_overwrites(nas: NasSettings) -> None:
    handler = ValidatorHandler(make_deps(nas, FakeSlurm()))
    handler(drop(nas, "x.sh", b"#!/bin/sh\necho 1\n"))
    handler(drop(nas, "x.sh", b"#!/bin/sh\necho 2\n"))
    assert sorted(p.name for p in nas.failed_dir.iterdir()) == [
        "x.1.sh", "x.1.sh.error", "x.sh", "x.sh.error",
    ]  # fmt: skip
    assert (nas.failed_dir / "x.1.sh").read_bytes() == b"#!/bin/sh\necho 2\n"


def test_redelivery_makes_no_second_job(nas: NasSettings) -> None:
    slurm = FakeSlurm()
    handler = ValidatorHandler(make_deps(nas, slurm))
    event = drop(nas, "hello.sh", HELLO)
    first = handler(event)
    again = handler(event)
    assert len(slurm.submitted) == 1
    assert [e.message_id for e in again] == [e.message_id for e in first]


def test_lookups_after_an_attempt_insist_on_an_answer(nas: NasSettings) -> None:
    slurm = FakeSlurm()
    event = drop(nas, "hello.sh", HELLO)
    with pytest.raises(Crash):
        ValidatorHandler(make_deps(nas, slurm, crash_at="after-sbatch"))(event)
    ValidatorHandler(make_deps(nas, slurm))(event)
    assert slurm.lookups == [False, True]


@pytest.mark.parametrize("step", ["after-sbatch", "after-journal", "after-move"])
def test_crash_at_any_step_then_redelivery_makes_one_job(nas: NasSettings, step: str) -> None:
    slurm = FakeSlurm()
    event = drop(nas, "hello.sh", HELLO)
    with pytest.raises(Crash):
        ValidatorHandler(make_deps(nas, slurm, crash_at=step))(event)
    [out] = ValidatorHandler(make_deps(nas, slurm))(event)
    assert len(slurm.submitted) == 1
    assert isinstance(out.body, JobSubmitted)
    assert out.body.job_id == 101
    assert (nas.submitted_dir / "hello.sh.receipt.json").exists()
    assert not (nas.submit_dir / "hello.sh").exists()


def test_journal_lost_but_slurm_knows_the_key(nas: NasSettings) -> None:
    event = drop(nas, "hello.sh", HELLO)
    slurm = FakeSlurm(jobs={submission_key(event.body): 77})  # type: ignore[arg-type]
    [out] = ValidatorHandler(make_deps(nas, slurm))(event)
    assert slurm.submitted == []
    assert isinstance(out.body, JobSubmitted)
    assert out.body.job_id == 77


def _journal_born_in_the_past(nas: NasSettings, seconds: float = 60) -> None:
    """The journal existed before the test's drops (as it does on a running door)."""
    journal = Journal(nas.state_dir / "validator")
    born = journal.born_ns()
    mark = nas.state_dir / "validator" / BIRTH_MARK
    os.utime(mark, ns=(born - int(seconds * 1e9), born - int(seconds * 1e9)))


def test_a_key_never_tried_is_not_looked_up_in_slurm(nas: NasSettings) -> None:
    _journal_born_in_the_past(nas)
    slurm = FakeSlurm()
    [out] = ValidatorHandler(make_deps(nas, slurm))(drop(nas, "hello.sh", HELLO))
    assert isinstance(out.body, JobSubmitted)
    assert slurm.lookups == []  # the journal vouches: no sbatch ever started for this key
    assert len(slurm.submitted) == 1


def test_after_an_attempt_the_key_is_looked_up_even_in_a_young_file(nas: NasSettings) -> None:
    _journal_born_in_the_past(nas)
    slurm = FakeSlurm()
    event = drop(nas, "hello.sh", HELLO)
    with pytest.raises(Crash):
        ValidatorHandler(make_deps(nas, slurm, crash_at="after-sbatch"))(event)
    [out] = ValidatorHandler(make_deps(nas, slurm))(event)
    assert slurm.lookups == [True]
    assert len(slurm.submitted) == 1
    assert isinstance(out.body, JobSubmitted)


def test_a_file_older_than_the_journal_is_looked_up(nas: NasSettings) -> None:
    """The journal was lost and made again: files from before it may have been submitted."""
    event = drop(nas, "hello.sh", HELLO)
    slurm = FakeSlurm(jobs={submission_key(event.body): 77})  # type: ignore[arg-type]
    shutil.rmtree(nas.state_dir / "validator", ignore_errors=True)
    [out] = ValidatorHandler(make_deps(nas, slurm))(event)
    assert slurm.lookups == [False]
    assert slurm.submitted == []
    assert isinstance(out.body, JobSubmitted)
    assert out.body.job_id == 77


def test_an_old_mtime_with_a_new_ctime_is_still_looked_up(nas: NasSettings) -> None:
    """``touch -d`` or ``cp -p`` can set mtime back; the lookup then happens (safe side)."""
    _journal_born_in_the_past(nas)
    event = drop(nas, "hello.sh", HELLO)
    path = Path(event.body.path)  # type: ignore[attr-defined]
    old = (nas.state_dir / "validator" / BIRTH_MARK).stat().st_mtime_ns - 10**9
    os.utime(path, ns=(old, old))
    event = drop_event(path, HELLO)
    slurm = FakeSlurm()
    ValidatorHandler(make_deps(nas, slurm))(event)
    assert slurm.lookups == [False]
    assert len(slurm.submitted) == 1


def test_the_journal_marks_its_birth_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    first = journal.born_ns()
    assert (tmp_path / "j" / BIRTH_MARK).exists()
    assert journal.born_ns() == first
    shutil.rmtree(tmp_path / "j")
    assert journal.born_ns() >= first  # lost and made again: born anew


def test_transient_sbatch_failure_leaves_the_file_waiting(nas: NasSettings) -> None:
    slurm = FakeSlurm(fail=TransientError("Unable to contact slurm controller"))
    event = drop(nas, "hello.sh", HELLO)
    with pytest.raises(TransientError):
        ValidatorHandler(make_deps(nas, slurm))(event)
    assert (nas.submit_dir / "hello.sh").exists()
    slurm.fail = None
    [out] = ValidatorHandler(make_deps(nas, slurm))(event)
    assert isinstance(out.body, JobSubmitted)


def test_sbatch_refusal_is_filed_with_its_words(nas: NasSettings) -> None:
    slurm = FakeSlurm(fail=SubmitRefused(["Batch job submission failed: Invalid account"]))
    [out] = ValidatorHandler(make_deps(nas, slurm))(drop(nas, "hello.sh", HELLO))
    assert isinstance(out.body, JobRejected)
    assert (
        "file: sbatch: Batch job submission failed: Invalid account"
        in (nas.failed_dir / "hello.sh.error").read_text()
    )


def test_job_submit_lua_refusal_keeps_its_line_numbers(nas: NasSettings) -> None:
    reasons = ["line 2: asks for 9 CPUs; the limit is 2", "Batch job submission failed"]
    slurm = FakeSlurm(fail=SubmitRefused(reasons))
    ValidatorHandler(make_deps(nas, slurm))(drop(nas, "hello.sh", HELLO))
    assert (nas.failed_dir / "hello.sh.error").read_text().splitlines()[1:] == [
        "file: sbatch: Batch job submission failed",
        "line 2: asks for 9 CPUs; the limit is 2",
    ]


def test_bash_runs_only_for_a_file_refused_anyway(nas: NasSettings) -> None:
    checked: list[bytes] = []

    def syntax(data: bytes) -> list[Problem]:
        checked.append(data)
        return [Problem(line=5, message="shell syntax: unexpected end of file")]

    deps = replace(make_deps(nas, FakeSlurm()), syntax=syntax)
    ValidatorHandler(deps)(drop(nas, "hello.sh", HELLO))
    assert checked == []  # job_submit.lua runs bash -n on what sbatch gives it
    bad = b"#!/bin/bash\n#SBATCH -c 64\n#K8S_IMAGE=nas-hub.local:5407/alpine:latest\nif\n"
    ValidatorHandler(deps)(drop(nas, "bad.sh", bad))
    assert checked == [bad]
    assert (nas.failed_dir / "bad.sh.error").read_text().splitlines()[1:] == [
        "line 2: asks for 64 CPUs; the limit is 2",
        "line 5: shell syntax: unexpected end of file",
    ]


def test_changed_or_vanished_file_is_a_stale_event(nas: NasSettings) -> None:
    slurm = FakeSlurm()
    handler = ValidatorHandler(make_deps(nas, slurm))
    event = drop(nas, "hello.sh", HELLO)
    (nas.submit_dir / "hello.sh").write_bytes(HELLO + b"echo more\n")
    assert handler(event) == []
    (nas.submit_dir / "hello.sh").unlink()
    assert handler(event) == []
    assert slurm.submitted == []


@pytest.mark.parametrize(
    ("uid", "reason"),
    [(0, "is owned by root"), (4242, "is owned by uid 4242, which has no account here")],
)
def test_root_or_unknown_owner_is_rejected(nas: NasSettings, uid: int, reason: str) -> None:
    [out] = ValidatorHandler(make_deps(nas, FakeSlurm()))(drop(nas, "h.sh", HELLO, uid=uid))
    assert isinstance(out.body, JobRejected)
    assert reason in out.body.problems[0].message


def test_symlink_is_rejected_not_followed(nas: NasSettings, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("#!/bin/sh\n")
    link = nas.submit_dir / "link.sh"
    link.symlink_to(secret)
    st = link.lstat()  # the watcher's event describes the link itself
    event = Envelope.wrap(
        FileDetected(
            path=str(link), size=st.st_size, mtime_ns=st.st_mtime_ns, sha256="0" * 64, owner_uid=0
        )
    )
    [out] = ValidatorHandler(make_deps(nas, FakeSlurm()))(event)
    assert isinstance(out.body, JobRejected)
    assert (nas.failed_dir / "link.sh").is_symlink()
    assert secret.exists()


def test_other_events_are_permanent_errors(nas: NasSettings) -> None:
    event = Envelope.wrap(JobStarted(job_id=1, restart_count=0, node="n", user="a", uid=1, gid=1))
    with pytest.raises(PermanentError):
        ValidatorHandler(make_deps(nas, FakeSlurm()))(event)


def test_a_name_taken_between_choice_and_move_gets_the_next_free_one(
    nas: NasSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker filed a file of the same name first: nothing is overwritten."""
    real_move = handlers.move_no_clobber
    other = b"#!/bin/sh\necho other\n"

    def racing(source: Path, destination: Path) -> None:
        if destination.name == "hello.sh" and not destination.exists():
            destination.write_bytes(other)  # the other worker's move lands first
        real_move(source, destination)

    monkeypatch.setattr(handlers, "move_no_clobber", racing)
    slurm = FakeSlurm()
    event = drop(nas, "hello.sh", HELLO)
    [out] = ValidatorHandler(make_deps(nas, slurm))(event)
    assert isinstance(out.body, JobSubmitted)
    assert (nas.submitted_dir / "hello.sh").read_bytes() == other
    assert (nas.submitted_dir / "hello.1.sh").read_bytes() == HELLO
    receipt = json.loads((nas.submitted_dir / "hello.1.sh.receipt.json").read_text())
    assert receipt["submitted_path"] == str(nas.submitted_dir / "hello.1.sh")
    record = Journal(nas.state_dir / "validator").read(submission_key(event.body))  # type: ignore[arg-type]
    assert record["destination"] == str(nas.submitted_dir / "hello.1.sh")
    assert len(slurm.submitted) == 1


def test_the_validator_runs_every_worker_until_each_returns() -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def loop(n: int) -> Callable[[], None]:
        def run() -> None:
            with lock:
                ran.append(n)

        return run

    run_all([loop(n) for n in range(4)])
    assert sorted(ran) == [0, 1, 2, 3]


def test_the_receipt_names_the_k8s_script(nas: NasSettings, tmp_path: Path) -> None:
    program = tmp_path / "programs" / "train.py"
    program.parent.mkdir()
    program.write_text("print(1)\n")
    program.chmod(0o644)
    tmp_path.chmod(0o755)
    text = HELLO.replace(b"#K8S_IMAGE=", b"#K8S_SCRIPT=" + str(program).encode() + b"\n#K8S_IMAGE=")
    deps = make_deps(nas, FakeSlurm())
    deps = replace(deps, policy=deps.policy.model_copy(update={"script_roots": (str(tmp_path),)}))
    [out] = ValidatorHandler(deps)(drop(nas, "train.sh", text))
    assert isinstance(out.body, JobSubmitted)
    receipt = json.loads((nas.submitted_dir / "train.sh.receipt.json").read_text())
    assert receipt["k8s_script"] == str(program)


def test_a_dead_lettered_file_is_parked_in_failed_with_an_answer(nas: NasSettings) -> None:
    event = drop(nas, "hello.sh", HELLO)
    slurm = FakeSlurm(fail=TransientError("slurmctld not answering"))
    handler = ValidatorHandler(make_deps(nas, slurm))
    with pytest.raises(TransientError):
        handler(event)
    handler.dead_lettered(event, "still failing after 40 retries: TransientError: slurmctld")
    parked = nas.failed_dir / "hello.sh"
    assert parked.read_bytes() == HELLO
    assert not (nas.submit_dir / "hello.sh").exists()
    notice = (nas.failed_dir / "hello.sh.error").read_text()
    assert "could not submit hello.sh" in notice
    assert "not a problem found in your file" in notice
    assert "operators have been told" in notice
    assert (nas.failed_dir / "hello.sh.error").stat().st_uid == ALICE
    handler.dead_lettered(event, "again")  # answered once: nothing moves twice
    assert parked.exists()


def test_a_replayed_event_submits_the_parked_file_and_removes_the_notice(
    nas: NasSettings,
) -> None:
    event = drop(nas, "hello.sh", HELLO)
    slurm = FakeSlurm(fail=TransientError("slurmctld not answering"))
    handler = ValidatorHandler(make_deps(nas, slurm))
    handler.dead_lettered(event, "still failing")
    slurm.fail = None  # the cause is fixed; the operator replays the event
    [out] = handler(event)
    assert isinstance(out.body, JobSubmitted)
    assert (nas.submitted_dir / "hello.sh").read_bytes() == HELLO
    assert sorted(p.name for p in nas.failed_dir.iterdir()) == []
    assert len(slurm.submitted) == 1


def test_a_replayed_parked_file_with_a_problem_keeps_its_place_with_the_real_error(
    nas: NasSettings,
) -> None:
    event = drop(nas, "bad.sh", b"#!/bin/bash\n#SBATCH --uid=0\necho\n")
    handler = ValidatorHandler(make_deps(nas, FakeSlurm()))
    handler.dead_lettered(event, "crashed the validator")
    [out] = handler(event)
    assert isinstance(out.body, JobRejected)
    assert sorted(p.name for p in nas.failed_dir.iterdir()) == ["bad.sh", "bad.sh.error"]
    assert "could not submit" not in (nas.failed_dir / "bad.sh.error").read_text()


def test_a_file_changed_since_its_dead_lettered_event_is_left_alone(nas: NasSettings) -> None:
    event = drop(nas, "hello.sh", HELLO)
    (nas.submit_dir / "hello.sh").write_bytes(HELLO + b"echo changed\n")
    ValidatorHandler(make_deps(nas, FakeSlurm())).dead_lettered(event, "x")
    assert (nas.submit_dir / "hello.sh").exists()
    assert list(nas.failed_dir.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_pipes_and_deep_folders_are_filed_with_their_reason(nas: NasSettings, kind: str) -> None:
    folder = nas.submit_dir / "alice"
    folder.mkdir()
    entry = folder / "thing"
    if kind == "fifo":
        os.mkfifo(entry)
    else:
        entry.mkdir()
        (entry / "deep.sh").write_bytes(HELLO)
    os.lchown(entry, ALICE, ALICE)
    st = entry.lstat()
    event = Envelope.wrap(
        FileDetected(
            path=str(entry),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            sha256="0" * 64,
            owner_uid=ALICE,
        )
    )
    [out] = ValidatorHandler(make_deps(nas, FakeSlurm()))(event)
    assert isinstance(out.body, JobRejected)
    assert "not a regular file" in out.body.problems[0].message
    assert (nas.failed_dir / "thing").exists()
    assert not entry.exists()
    if kind == "directory":
        assert (nas.failed_dir / "thing" / "deep.sh").read_bytes() == HELLO
    assert (nas.failed_dir / "thing.error").stat().st_uid == ALICE
