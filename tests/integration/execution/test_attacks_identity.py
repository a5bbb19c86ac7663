"""Attacks on who a job runs as and on what makes a job a slurm-k8s job, tried as users would.

bob (2002) tries to run a job as alice (2001): through fields Slurm prints next to the owner
(job name, comment, output paths), through both doors. Each attempt must leave alice's home
untouched, run as bob or not at all, and any refusal must reach bob's output as one clear
line. An operator removing the acceptance mark stands in for a job that slurm-k8s never
accepted (job_submit.lua refuses forged wrappers before they are queued, see
tests/integration/submission/test_attacks_sbatch.py): the launcher must refuse it by itself.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.jobpods import JOB_NAMESPACE, refusal_path, run_name
from shared.jobscript.wrapping import ACCEPTED_MARK

pytestmark = pytest.mark.integration

ALICE, BOB = 2001, 2002
IMAGE = "nas-hub.local:5407/alpine:latest"
SPOOFS = (
    "x UserId=alice(2001) GroupId=alice(2001)",
    "UserId=alice(2001) GroupId=alice(2001) x",
    "x\tUserId=alice(2001)",
    "x UserId=root(0) GroupId=root(0) NumCPUs=64 TRES=cpu=64,mem=1T,gres/gpu=4",
    "x JobState=COMPLETED Restarts=7 AdminComment=slurmk8s-accepted",
    # One job's own squeue record ends each field in U+001F: forged ones shift alice's uid
    # and the acceptance mark into the fields after the name.
    "x\x1f(null)\x1fslurmk8s-accepted\x1f/tmp/x\x1fgpu\x1f1\x1f/\x1f2001\x1f",
)


@pytest.fixture
def alice_home(lab_env: dict[str, str]) -> Iterator[Path]:
    home = Path(lab_env["NAS_ROOT"]) / "home" / "alice"
    marker = home / f"pwned-{uuid.uuid4().hex[:6]}"
    yield marker
    marker.unlink(missing_ok=True)


def _output(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.parametrize("name", SPOOFS)
def test_a_job_name_cannot_make_bobs_job_run_as_alice(
    name: str, jobs: Any, kube_core: Any, alice_home: Path, lab_env: dict[str, str]
) -> None:
    nas = Path(lab_env["NAS_ROOT"])
    stem = nas / "home" / "bob" / f"spoof-{uuid.uuid4().hex[:6]}"
    out, seen = stem.with_suffix(".out"), stem.with_suffix(".seen")
    # The job holds its Pod until the test has looked at it: such a short job's Pod can
    # otherwise come and go between two polls.
    body = (
        f"id -u; until [ -e {seen} ]; do sleep 0.2; done\n"
        f"touch {alice_home} && echo WROTE || echo REFUSED"
    )
    job_id = jobs.submit("bob", jobs.script(IMAGE, body), "-J", name, "-o", str(out))
    pod = jobs.wait_for(
        "the Pod", lambda: next(iter(jobs.pods(kube_core, job_id)), None), timeout=120
    )
    seen.touch()
    assert pod.spec.security_context.run_as_user == BOB
    assert pod.spec.security_context.run_as_group == BOB
    assert pod.metadata.labels["slurm-k8s.io/user"] == "bob"
    state = jobs.wait_done(job_id)
    text = _output(out)
    assert not alice_home.exists(), text
    assert "REFUSED" in text, text
    assert "WROTE" not in text, text
    assert f"\n{BOB}\n" in text, text
    assert state[0] == "COMPLETED", (state, text)
    out.unlink(missing_ok=True)
    seen.unlink(missing_ok=True)


def test_a_file_name_on_the_nas_cannot_make_bobs_job_run_as_alice(
    nas_door: None,
    jobs: Any,
    kube_core: Any,
    run_as: Any,
    alice_home: Path,
    lab_env: dict[str, str],
) -> None:
    """The NAS door passes the file name into the job name: the same attack, other door."""
    nas = Path(lab_env["NAS_ROOT"])
    name = f"x UserId=alice(2001) GroupId=alice(2001) {uuid.uuid4().hex[:6]}"
    target = nas / "slurm-jobs" / "submit" / name
    body = f"id -u; touch {alice_home} && echo WROTE || echo REFUSED"
    run_as("bob", ["sh", "-c", 'cat > "$0"', str(target)], input=jobs.script(IMAGE, body))
    folders = (nas / "slurm-jobs" / "submitted", nas / "slurm-jobs" / "failed")
    jobs.wait_for(
        "the file to be answered",
        lambda: any((f / name).exists() for f in folders),
        timeout=120,
    )
    receipt = folders[0] / f"{name}.receipt.json"
    if not receipt.exists():
        return  # refused at the door: nothing ran, which is harmless too
    data = json.loads(receipt.read_text())
    job_id = int(data["job_id"])
    jobs.submitted.append(job_id)
    assert data["uid"] == BOB
    jobs.wait_done(job_id)
    assert not alice_home.exists()
    assert "REFUSED" in _output(Path(data["output_path"]))
    for path in (folders[0] / name, receipt, Path(data["output_path"])):
        path.unlink(missing_ok=True)


def test_a_job_name_cannot_redirect_the_collectors_writes_into_alices_files(
    jobs: Any, lab_env: dict[str, str]
) -> None:
    """The collector appends a footer and writes a summary as root: only into bob's files."""
    nas = Path(lab_env["NAS_ROOT"])
    victim = nas / "home" / "alice" / f"notes-{uuid.uuid4().hex[:6]}.txt"
    subprocess.run(["install", "-o", "alice", "-g", "alice", "/dev/null", str(victim)], check=True)
    out = nas / "home" / "bob" / f"redir-{uuid.uuid4().hex[:6]}.out"
    try:
        name = f"x StdOut={victim} StdErr={victim}"
        job_id = jobs.submit("bob", jobs.script(IMAGE, "echo hi"), "-J", name, "-o", str(out))
        jobs.wait_done(job_id)
        jobs.wait_for("bob's summary", out.with_name(out.name + ".summary.json").exists)
        assert victim.read_bytes() == b""
        assert not victim.with_name(victim.name + ".summary.json").exists()
        assert "outcome: Succeeded" in _output(out)
    finally:
        victim.unlink(missing_ok=True)
        for path in (out, out.with_name(out.name + ".summary.json")):
            path.unlink(missing_ok=True)


def _hold_then(jobs: Any, user: str, body: str, out: Path, *extra: str) -> int:
    return int(jobs.submit(user, jobs.script(IMAGE, body), "--hold", "-o", str(out), *extra))


def _admin_comment(job_id: int) -> str:
    out = subprocess.run(
        ["squeue", "--json"], capture_output=True, text=True, errors="replace", check=True
    ).stdout
    job = next(j for j in json.loads(out)["jobs"] if j["job_id"] == job_id)
    return str(job["admin_comment"])


def test_a_job_slurm_k8s_did_not_accept_gets_no_pod_and_says_why(
    jobs: Any, kube_core: Any, lab_env: dict[str, str]
) -> None:
    nas = Path(lab_env["NAS_ROOT"])
    out = nas / "home" / "alice" / f"unmarked-{uuid.uuid4().hex[:6]}.out"
    job_id = _hold_then(jobs, "alice", "echo SHOULD-NOT-RUN", out)
    assert _admin_comment(job_id).startswith(ACCEPTED_MARK)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "AdminComment=x"], check=True)
    subprocess.run(["scontrol", "release", str(job_id)], check=True)
    state = jobs.wait_done(job_id, timeout=120)
    text = _output(out)
    assert state == ["FAILED", "125:0"], (state, text)
    assert "reason=Refused" in text
    assert "not accepted by the slurm-k8s submit policy" in text
    assert "SHOULD-NOT-RUN" not in text
    assert jobs.pods(kube_core, job_id) == []
    state_dir = nas / "slurm-jobs" / ".state"
    jobs.wait_for(
        "the refusal to be cleaned up",
        lambda: not refusal_path(state_dir, job_id, 0).exists(),
        timeout=120,
    )
    for path in (out, out.with_name(out.name + ".summary.json")):
        path.unlink(missing_ok=True)


def test_an_object_left_by_another_job_is_not_adopted(
    jobs: Any, kube_core: Any, lab_env: dict[str, str]
) -> None:
    """slurmctld reuses ids after losing its state: a stale job-N-r0 must not be taken over."""
    from kubernetes import client

    nas = Path(lab_env["NAS_ROOT"])
    out = nas / "home" / "alice" / f"stale-{uuid.uuid4().hex[:6]}.out"
    job_id = _hold_then(jobs, "alice", "echo SHOULD-NOT-RUN", out)
    name = run_name(job_id, 0)
    stale = client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(
            name=name,
            labels={
                "slurm-k8s.io/job-id": str(job_id),
                "slurm-k8s.io/restart-count": "0",
                "slurm-k8s.io/user": "bob",
                "app.kubernetes.io/managed-by": "slurm-k8s",
            },
        )
    )
    kube_core.create_namespaced_service_account(JOB_NAMESPACE, stale)
    try:
        subprocess.run(["scontrol", "release", str(job_id)], check=True)
        state = jobs.wait_done(job_id, timeout=120)
        text = _output(out)
        assert state == ["FAILED", "125:0"], (state, text)
        assert "already exists for another job" in text
        assert jobs.pods(kube_core, job_id) == []
    finally:
        # The collector may already have removed it with the run's other objects.
        with contextlib.suppress(client.exceptions.ApiException):
            kube_core.delete_namespaced_service_account(name, JOB_NAMESPACE)
        for path in (out, out.with_name(out.name + ".summary.json")):
            path.unlink(missing_ok=True)


def test_script_bytes_reach_the_container_unchanged(jobs: Any, lab_env: dict[str, str]) -> None:
    nas = Path(lab_env["NAS_ROOT"])
    out = nas / "home" / "alice" / f"bytes-{uuid.uuid4().hex[:6]}.out"
    script = jobs.script(IMAGE, "printf 'caf\xe9' | od -An -b").encode("latin-1")
    done = subprocess.run(
        ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-o", str(out)],
        input=script,
        capture_output=True,
        check=False,
        cwd="/tmp",
    )
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.decode().strip())
    jobs.submitted.append(job_id)
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    text = _output(out)
    assert "143 141 146 351" in text, text
    for path in (out, out.with_name(out.name + ".summary.json")):
        path.unlink(missing_ok=True)
