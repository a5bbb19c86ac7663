"""The validator looks at size and kind with lstat before it reads a byte, and reads at most
the limit plus one byte; files of system accounts are refused (issue 7)."""

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from services.validator import filing
from services.validator.filing import Journal, read_job_file
from services.validator.handlers import ValidatorDeps, ValidatorHandler
from shared.config import NasSettings
from shared.jobscript.policy import REPO_PATH, load_policy
from shared.messages import Envelope, FileDetected, JobRejected, JobSubmitted
from tests.unit.services.reads import count_reads

pytestmark = pytest.mark.unit

ALICE = 2001
LIMIT = 1024
HELLO = (Path(__file__).parents[4] / "examples" / "hello.sh").read_bytes()
ACCOUNTS = {ALICE: "alice", 0: "root", 1: "daemon", 999: "svc", 65534: "nobody"}


class FakeSlurm:
    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        self.submitted.append(user)
        return 100 + len(self.submitted)

    def find_job(self, *, user: str, key: str, attempted: bool) -> int | None:
        return None

    def stdout_path(self, job_id: int, *, user: str, name: str) -> str | None:
        return None


@pytest.fixture
def nas(tmp_path: Path) -> NasSettings:
    settings = NasSettings(NAS_ROOT=tmp_path)
    for d in (settings.submit_dir, settings.failed_dir, settings.submitted_dir):
        d.mkdir(parents=True)
    for user in ACCOUNTS.values():
        (tmp_path / "home" / user).mkdir(parents=True)
    return settings


def deps(nas: NasSettings, slurm: FakeSlurm, **policy: Any) -> ValidatorDeps:
    base = load_policy(REPO_PATH).model_copy(update={"max_script_bytes": LIMIT, **policy})
    return ValidatorDeps(
        policy=base,
        nas=nas,
        slurm=slurm,
        journal=Journal(nas.state_dir / "validator"),
        accounts=ACCOUNTS.get,
        syntax=None,
    )


def event_for(path: Path, sha256: str) -> Envelope:
    st = path.lstat()
    return Envelope.wrap(
        FileDetected(
            path=str(path),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            sha256=sha256,
            owner_uid=st.st_uid,
        )
    )


def sparse(path: Path, size: int, uid: int = ALICE) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    os.chown(path, uid, uid)
    return path


def never_open(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    real_open = os.open

    def guarded(name: Any, *args: Any, **kwargs: Any) -> int:
        if Path(name) == path:
            raise AssertionError(f"{path} was opened")
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(filing.os, "open", guarded)


def test_a_sparse_terabyte_is_judged_by_lstat_and_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = sparse(tmp_path / "big.sh", 1 << 40)
    never_open(monkeypatch, big)
    read = read_job_file(big, LIMIT)
    assert (read.kind, read.oversize, read.data, read.sha256) == ("file", True, None, "")
    assert read.size == 1 << 40
    assert read.mtime_ns == big.lstat().st_mtime_ns


def test_the_limit_itself_is_read_one_byte_more_is_not(tmp_path: Path) -> None:
    at = tmp_path / "at.sh"
    at.write_bytes(b"x" * LIMIT)
    assert read_job_file(at, LIMIT).data == b"x" * LIMIT
    over = tmp_path / "over.sh"
    over.write_bytes(b"x" * (LIMIT + 1))
    assert read_job_file(over, LIMIT).oversize


def test_a_file_that_grows_after_lstat_is_read_only_up_to_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # lstat and fstat say 10 bytes (the file was small when looked at); it is 64 MiB by the
    # time it is read. The read stops after limit + 1 bytes and says it is over the limit.
    grown = tmp_path / "grown.sh"
    grown.write_bytes(b"y" * (64 << 20))
    real_lstat, real_fstat = os.lstat, os.fstat

    class Small:
        def __init__(self, st: os.stat_result) -> None:
            self._st = st

        def __getattr__(self, name: str) -> Any:
            return 10 if name == "st_size" else getattr(self._st, name)

    monkeypatch.setattr(filing.os, "lstat", lambda p: Small(real_lstat(p)))
    calls: list[int] = []

    def fstat(fd: int) -> Any:
        calls.append(fd)
        return Small(real_fstat(fd)) if len(calls) == 1 else real_fstat(fd)

    monkeypatch.setattr(filing.os, "fstat", fstat)
    counted = count_reads(monkeypatch, filing)
    read = read_job_file(grown, LIMIT)
    assert sum(counted) == LIMIT + 1
    assert read.oversize
    assert read.data is None
    assert read.size == 64 << 20  # what fstat said after the bounded read


def test_a_huge_file_goes_to_failed_with_its_size_and_the_limit_unread(
    nas: NasSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = sparse(nas.submit_dir / "huge.sh", 8 << 30)
    event = event_for(path, "a" * 64)  # what the watcher sends: a digest of the identity
    slurm = FakeSlurm()
    never_open(monkeypatch, path)
    [out] = ValidatorHandler(deps(nas, slurm))(event)
    assert isinstance(out.body, JobRejected)
    [problem] = out.body.problems
    assert problem.message == (
        "the file is 8589934592 bytes (8.0 GiB); the limit is 1024 bytes (1.0 KiB); it was not read"
    )
    assert slurm.submitted == []
    assert not path.exists()
    assert (nas.failed_dir / "huge.sh").lstat().st_size == 8 << 30
    error = (nas.failed_dir / "huge.sh.error").read_text()
    assert "8589934592 bytes" in error
    assert "1024 bytes" in error
    # A redelivery publishes the same outcome and moves nothing more.
    [again] = ValidatorHandler(deps(nas, slurm))(event)
    assert again.body == out.body


def test_a_huge_file_changed_since_it_was_detected_is_a_stale_event(nas: NasSettings) -> None:
    path = sparse(nas.submit_dir / "huge.sh", 8 << 30)
    event = event_for(path, "a" * 64)
    os.utime(path, ns=(1, 1))  # touched: the watcher publishes it again with its new mtime
    assert ValidatorHandler(deps(nas, FakeSlurm()))(event) == []
    assert path.exists()


def test_a_file_that_grew_past_the_limit_after_detection_is_a_stale_event(
    nas: NasSettings,
) -> None:
    path = nas.submit_dir / "grows.sh"
    path.write_bytes(HELLO)
    os.chown(path, ALICE, ALICE)
    event = event_for(path, hashlib.sha256(HELLO).hexdigest())
    with path.open("ab") as handle:
        handle.truncate(8 << 30)
    slurm = FakeSlurm()
    assert ValidatorHandler(deps(nas, slurm))(event) == []
    assert slurm.submitted == []
    assert path.exists()  # the watcher sees it change and publishes it again


def test_a_watcher_with_a_bigger_limit_still_gets_its_file_filed(nas: NasSettings) -> None:
    # The watcher hashed the content (its limit was bigger); this validator's limit is
    # smaller: the file is refused as too big, not dropped as stale (nothing lost).
    data = HELLO + b"#" * LIMIT
    path = nas.submit_dir / "hello.sh"
    path.write_bytes(data)
    os.chown(path, ALICE, ALICE)
    [out] = ValidatorHandler(deps(nas, FakeSlurm()))(
        event_for(path, hashlib.sha256(data).hexdigest())
    )
    assert isinstance(out.body, JobRejected)
    assert "the limit is 1024 bytes" in out.body.problems[0].message


@pytest.mark.parametrize(("uid", "name"), [(1, "daemon"), (999, "svc"), (65534, "nobody")])
def test_a_file_of_a_system_account_is_refused(nas: NasSettings, uid: int, name: str) -> None:
    path = nas.submit_dir / "hello.sh"
    path.write_bytes(HELLO)
    os.chown(path, uid, uid)
    slurm = FakeSlurm()
    [out] = ValidatorHandler(deps(nas, slurm))(event_for(path, hashlib.sha256(HELLO).hexdigest()))
    assert isinstance(out.body, JobRejected)
    assert [p.message for p in out.body.problems] == [
        f"the file is owned by {name} (uid {uid}); files of system accounts are not submitted"
    ]
    assert slurm.submitted == []
    assert (nas.failed_dir / "hello.sh.error").stat().st_uid == uid


def test_min_uid_is_the_policys(nas: NasSettings) -> None:
    path = nas.submit_dir / "hello.sh"
    path.write_bytes(HELLO)
    os.chown(path, 999, 999)
    slurm = FakeSlurm()
    [out] = ValidatorHandler(deps(nas, slurm, min_uid=500))(
        event_for(path, hashlib.sha256(HELLO).hexdigest())
    )
    assert isinstance(out.body, JobSubmitted)
    assert slurm.submitted == ["svc"]


def test_root_follows_the_root_rule_not_min_uid(nas: NasSettings) -> None:
    path = nas.submit_dir / "hello.sh"
    path.write_bytes(HELLO)
    os.chown(path, 0, 0)
    slurm = FakeSlurm()
    [out] = ValidatorHandler(deps(nas, slurm, allow_root_owned_files=True))(
        event_for(path, hashlib.sha256(HELLO).hexdigest())
    )
    assert isinstance(out.body, JobSubmitted)
    assert slurm.submitted == ["root"]
