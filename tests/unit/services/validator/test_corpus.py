"""Every NAS-door case of the hostile corpus through the validator's handler (issue 9).

Each case is built in a submit folder under ``tmp_path`` (links, FIFOs, folders, owners,
sparse files, files that change after detection), given the event the watcher would publish,
and handled with a fake Slurm: the file must end in ``submitted/`` with a receipt or in
``failed/`` with an ``.error`` carrying the case's reason, and only accepted files reach
Slurm. The watcher's part (which names it publishes at all) is ``test_corpus_doors.py``'s.
"""

import hashlib
import os
import stat
from pathlib import Path

import pytest

from services.validator.filing import Journal
from services.validator.handlers import ValidatorDeps, ValidatorHandler
from services.watcher.scanning import FileStat, by_identity
from services.watcher.watching import rename_to_shown
from shared.config import NasSettings
from shared.jobscript.policy import REPO_PATH, load_policy
from shared.jobscript.validation import bash_syntax, check_script
from shared.messages import Envelope, FileDetected, shown
from shared.slurmctl import SubmitRefused
from tests.corpus import ACCOUNTS_BY_UID, CHANGES, Case, build, change, load
from tests.unit.services.validator.test_handlers import FakeSlurm

pytestmark = pytest.mark.unit

CASES = [c for c in load() if c.nas is not None and c.nas.verdict != "stays"]
"""A case that stays in submit/ is the watcher's decision (it publishes nothing for it)."""
RUN = "u1"
if os.geteuid() != 0:
    pytest.skip("the corpus gives files to other users (chown needs root)", allow_module_level=True)


@pytest.fixture
def nas(tmp_path: Path) -> NasSettings:
    settings = NasSettings(NAS_ROOT=tmp_path)
    for d in (settings.submit_dir, settings.failed_dir, settings.submitted_dir):
        d.mkdir(parents=True)
    for user in ("alice", "bob", "daemon"):
        (tmp_path / "home" / user).mkdir(parents=True)
    return settings


def event_for(path: Path) -> Envelope:
    """What the watcher publishes for ``path`` as it is now (by identity when unread)."""
    st = os.lstat(path)
    limit = load_policy(REPO_PATH).max_script_bytes
    if stat.S_ISREG(st.st_mode) and st.st_size <= limit:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        seen = FileStat(str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_uid)
        digest = by_identity(seen).sha256
    return Envelope.wrap(
        FileDetected(
            path=str(path),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            sha256=digest,
            owner_uid=st.st_uid,
        )
    )


class SyntaxCheckingSlurm(FakeSlurm):
    """Checks a script as job_submit.lua does (bash -n included), refusing in its words."""

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        policy = load_policy(REPO_PATH)
        verdict = check_script(script, policy, user=user, home=str(cwd), syntax=bash_syntax)
        if verdict.problems:
            raise SubmitRefused([f"line {p.line}: {p.message}" for p in verdict.problems])
        return super().submit(script, user=user, key=key, cwd=cwd, job_name=job_name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_validator_files_each_case_with_its_reason(nas: NasSettings, case: Case) -> None:
    assert case.nas is not None
    if case.xfail:
        pytest.xfail(case.xfail)
    slurm = SyntaxCheckingSlurm()
    handler = ValidatorHandler(
        ValidatorDeps(
            policy=load_policy(REPO_PATH),
            nas=nas,
            slurm=slurm,
            journal=Journal(nas.state_dir / "validator"),
            accounts=ACCOUNTS_BY_UID.get,
            syntax=bash_syntax,
        )
    )
    staging = nas.submit_dir / ".staging"
    staging.mkdir()
    top, entry = build(case, staging, RUN)
    top.rename(nas.submit_dir / top.name)
    path = nas.submit_dir / entry
    if shown(str(path)) != str(path):  # the watcher's rename, before any event
        path = Path(rename_to_shown(nas.submit_dir, str(path)) or path)
    event = event_for(path)
    answered = []
    if case.kind in CHANGES:
        change(case, path)
        # The old event is stale for a changed file (the watcher publishes the new one); what
        # is no longer a regular file is answered as what it is now.
        answered = list(handler(event))
        if not answered and os.path.lexists(path):
            event = event_for(path)
    name = path.name
    verdict = case.nas.verdict
    if case.unit is not None and case.unit.verdict == "accepted":
        verdict = "submitted"  # only the real sbatch refuses it: the lab pass's part
    if verdict == "gone":
        assert not os.path.lexists(nas.failed_dir / name)
        assert not (nas.submitted_dir / name).exists()
    else:
        assert len(answered or handler(event)) == 1
        error = nas.failed_dir / f"{name}.error"
        if verdict == "submitted":
            assert (nas.submitted_dir / f"{name}.receipt.json").is_file(), _text(error)
            assert [s[1] for s in slurm.submitted] == [case.owner]
        else:
            assert case.nas.reason in _text(error)
            assert os.path.lexists(nas.failed_dir / name)
            assert slurm.submitted == []
            assert os.lstat(error).st_uid == os.lstat(nas.failed_dir / name).st_uid
    assert not os.path.lexists(path)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else "(no error file)"
