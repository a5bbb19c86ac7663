"""One job's own squeue record reads as the structured listing does, whatever its owner wrote.

``SlurmCtl.job_status`` asks squeue about one job (O(1) where 22.05's ``squeue --json`` lists
every job) and reads fields that end in U+001F. The owner writes the job name, the comment and
the output path, so each case here puts separators and a forged owner into one of them; the
answer must still be the listing's, and alice's (lab, Slurm 22.05). The AdminComment, which
carries job_submit.lua's acceptance mark, is read the same way.
"""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import Iterator, Sequence

import pytest

from shared.slurmctl import JobStatus, SlurmCtl, run_command
from tests.integration.conftest import RunAs, wait_for

pytestmark = pytest.mark.integration

FORGED = "\x1f0\x1fPENDING\x1f0\x1froot\x1f0\x1f0\x1f"
CASES = {
    "plain": [],
    "separator-in-name": [f"--job-name=x{FORGED}"],
    "separator-in-comment": [f"--comment=c{FORGED}"],
    "separator-in-output": [f"--output=/tmp/o{FORGED}%j"],
    "newline-in-name": ["--job-name=a\n10 alice"],
    "patterns": ["--job-name=n-%j", "--output=/tmp/%x-%u-%A-%a-%j.out"],
    "array": ["--array=1-2"],
    "separator-in-admin-comment": [],
    "limits": ["--time=1-02:03:00", "-c", "2", "--mem=300M", "--gres=gpu:1"],
    "running": ["--time=5", "-c", "2", "--mem=300M", "--gres=gpu:1", "-D", "/tmp"],
}
"""Every case is held but ``running``, which the launcher's reading of a started job needs."""
NOTE = "slurmk8s-accepted; pod=slurm-jobs/job-{job_id}-r0 phase=Pending"
"""The AdminComment slurm-k8s keeps (job_submit.lua's mark, the collector's note): users
cannot write it, but a note repeats a Pod's message, so one case puts separators in it too."""


@pytest.fixture
def held() -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=60)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_jobs_record_is_the_listings_whatever_its_owner_wrote(
    case: str, slurm_ready: str, run_as: RunAs, held: list[str]
) -> None:
    hold, body = (["--hold"], "true") if case != "running" else ([], "sleep 300")
    argv = ["sbatch", "--parsable", *hold, *CASES[case], "--wrap", body]
    done = run_as("alice", argv)
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.strip().split(";")[0])
    held.append(str(job_id))
    if case == "running":
        wait_for("the job to run", lambda: _state(job_id) == "RUNNING", timeout=120)
    note = NOTE.format(job_id=job_id) + (FORGED if case == "separator-in-admin-comment" else "")
    asked: list[list[str]] = []

    def recording(argv: Sequence[str], timeout_s: float) -> str:
        asked.append(list(argv))
        return run_command(argv, timeout_s)

    def unchanged_around_the_read() -> tuple[JobStatus, JobStatus] | None:
        # A running job's start is answered by the launcher in the AdminComment, at a moment
        # of its own: the note is written again until no one wrote between the two listings.
        SlurmCtl(timeout_s=30).update_job(job_id, AdminComment=note)
        before = SlurmCtl(timeout_s=30).job_info(job_id)
        asked.clear()
        status = SlurmCtl(recording, timeout_s=30).job_status(job_id)
        after = SlurmCtl(timeout_s=30).job_info(job_id)
        if before is None or status is None or after is None:
            return None
        listed = JobStatus.of(before)
        if listed != JobStatus.of(after) or listed.admin_comment != note:
            return None
        return status, listed

    status, listed = wait_for("a record no one rewrote meanwhile", unchanged_around_the_read, 60)
    assert status == listed
    assert status.admin_comment == note
    # Only a forged separator costs the listing of every job.
    assert any("--json" in argv for argv in asked) == ("separator" in case)
    alice = pwd.getpwnam("alice")
    assert (status.user, status.uid, status.gid) == ("alice", alice.pw_uid, alice.pw_gid)


def _state(job_id: int) -> str:
    return run_command(["squeue", "-h", f"--jobs={job_id}", "--states=all", "-o", "%T"], 30).strip()
