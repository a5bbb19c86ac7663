"""Attacks on the NAS door, written as a user would try them on the lab (issue 7).

* **A huge file stalls the door.** bob drops a sparse 8 GB file (``truncate -s 8G``), alice
  drops an ordinary hello.sh right after. Before the fix the watcher and the validator read and
  hashed all 8 GB first: alice waited 31 s instead of ≈2 s, and a 1 TB file would have stopped
  the door for an hour. Now both look at the size with ``lstat`` first: alice's file is
  accepted, bob's lands in ``failed/`` with its size and the limit, unread. Varied: a 1 TB
  sparse file, a file one byte over the limit, a huge file in a user's sub-folder, a file that
  grows after the watcher detected it, a file that keeps growing, and things that never end
  when read (a FIFO, links to ``/dev/zero`` and to a huge file) and a folder too deep to be
  read, which are answered unopened: moved to ``failed/`` as they are, with the reason.
* **A system account's file runs as that account.** A file owned by ``daemon`` (uid 1) was
  submitted as daemon. Now a file owned by a uid below the policy's ``min_uid`` is refused with
  a clear reason and no Slurm job is made for that account. Varied: ``bin`` (uid 2), and a
  daemon file in a sub-folder.

Outcomes are asserted, never timings; the drop → receipt latency of alice's file is measured
and printed (``bench/nas_huge_file.py`` compares it with and without a huge file present).

Each test runs its own watcher and validator (``python -m services.<name>``) on a throwaway
RabbitMQ vhost and a private NAS tree under the lab's NAS (``<NAS>/.attacks-nas-<id>``, its
``home/<user>`` linking to the real homes; daemon and bin get a home there too), against the
lab's real Slurm: no other watcher or validator can take these files, and both processes are
stopped when the test ends.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shared.config import NasSettings
from shared.jobscript import load_policy, policy_path
from tests.integration.execution.conftest import wait_for
from tests.integration.submission.test_nas_door import HELLO_TEXT, _outcome, drop_as

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RunAs = Callable[..., "subprocess.CompletedProcess[str]"]  # the conftest's run_as fixture
SYSTEM_ACCOUNTS = ("daemon", "bin")
DEADLINE_S = 120.0


def held_hello(job_name: str) -> str:
    """hello.sh with a job name of this run's, held so the lab's launcher never runs it
    (every job a test makes is scancelled at its end)."""
    return HELLO_TEXT.replace(
        "#SBATCH --job-name=hello\n", f"#SBATCH --job-name={job_name}\n#SBATCH --hold\n"
    )


@dataclass
class Door:
    """A private NAS tree with our own watcher and validator on a throwaway vhost."""

    nas: NasSettings
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    jobs: list[int] = field(default_factory=list)

    @property
    def jobs_dir(self) -> Path:
        return self.nas.nas_root / "slurm-jobs"

    @property
    def submit(self) -> Path:
        return self.nas.submit_dir

    def start(self, name: str) -> None:
        """Start ``python -m services.<name>`` and wait until it is working."""
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        ready = "watcher.configured" if name == "watcher" else '"consuming"'

        def started() -> bool:
            if self.procs[name].poll() is not None:
                pytest.fail(f"{name} exited at start:\n{self.log(name)}")
            return ready in log.read_text(errors="replace")

        wait_for(f"{name} to start", started, DEADLINE_S, interval=0.1)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sys.stderr.write(f"--- {name} (exit {proc.returncode}) ---\n{self.log(name)}\n")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def outcome(self, name: str) -> str | None:
        """'submitted', 'failed', or None while the file is on its way."""
        return _outcome(self.jobs_dir, name)

    def wait_filed(self, name: str, interval: float = 0.5) -> str:
        """Wait until the file is in submitted/ (with its receipt) or failed/ (with .error)."""
        result: str = wait_for(
            f"{name} to be filed", lambda: self.outcome(name), DEADLINE_S, interval
        )
        if result == "submitted":
            self.jobs.append(int(self.receipt(name)["job_id"]))
        return result

    def receipt(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            (self.jobs_dir / "submitted" / f"{name}.receipt.json").read_text()
        )
        return data

    def error(self, name: str) -> str:
        path = self.jobs_dir / "failed" / f"{name}.error"
        return path.read_text() if path.is_file() else "(no error file)"

    def published(self, path: Path) -> bool:
        """Whether our watcher logged publishing ``path``."""
        return any(
            '"file.published"' in line and json.dumps(str(path)) in line
            for line in (self.logs / "watcher.log").read_text(errors="replace").splitlines()
        )


@pytest.fixture
def door(
    lab_env: dict[str, str],
    vhost_url: str,
    slurm_ready: str,
    run_as: RunAs,
    tmp_path: Path,
) -> Iterator[Door]:
    """The private tree and its services; the watcher is not started yet (tests decide)."""
    nas_root = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s"))
    root = nas_root / f".attacks-nas-{uuid.uuid4().hex[:8]}"
    nas = NasSettings(NAS_ROOT=root)
    for d in (nas.submit_dir, nas.failed_dir, nas.submitted_dir):
        d.mkdir(parents=True)
    nas.submit_dir.chmod(0o1777)  # like the lab's submit/: anyone drops, nobody else removes
    (root / "home").mkdir()
    for user in ("alice", "bob"):
        (root / "home" / user).symlink_to(nas_root / "home" / user)
    for account in SYSTEM_ACCOUNTS:
        # A NAS home of their own, so that only the owner rule can stop their files (without
        # one, "your NAS home folder does not exist" would, by accident).
        owner = pwd.getpwnam(account)
        (root / "home" / account).mkdir()
        os.chown(root / "home" / account, owner.pw_uid, owner.pw_gid)
    env = {
        **os.environ,
        **lab_env,
        "AMQP_URL": vhost_url,
        "NAS_ROOT": str(root),
        "LOG_FORMAT": "json",
    }
    door = Door(nas, env, tmp_path)
    try:
        yield door
    finally:
        door.stop()
        if door.jobs:
            subprocess.run(["scancel", *map(str, door.jobs)], check=False, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def limit() -> int:
    """The policy's max_script_bytes, read the way the services read it."""
    return load_policy(policy_path()).max_script_bytes


def slurm_jobs(*, user: str | None = None, name_part: str = "") -> list[dict[str, Any]]:
    """Jobs slurmctld knows (``squeue --json`` lists all; filtered here), by user and name.

    Slurm prints a job name's bytes as given, so the JSON may hold bytes that are not UTF-8
    (the corpus submits such names); they are replaced, as shared.slurmctl does.
    """
    out = subprocess.run(
        ["squeue", "--json", "--all"], capture_output=True, check=True, timeout=60
    ).stdout.decode(errors="replace")
    jobs: list[dict[str, Any]] = json.loads(out)["jobs"]
    return [
        j
        for j in jobs
        if (user is None or j.get("user_name") == user) and name_part in str(j.get("name", ""))
    ]


def accounted_jobs(user: str, name_part: str) -> list[str]:
    """Jobs in accounting for ``user`` in the last hour whose name contains ``name_part``."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-u", user, "-S", "now-1hours", "--format=JobID,JobName"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    ).stdout
    return [line for line in out.splitlines() if name_part in line]


def drop_hello_and_measure(door: Door, run_as: RunAs, name: str) -> float:
    """alice drops an ordinary hello.sh; returns the drop → receipt latency in seconds.

    Asserts the outcome: alice's file is submitted, as alice's job.
    """
    dropped = time.monotonic()
    drop_as(run_as, "alice", door.submit / name, held_hello(name))
    outcome = door.wait_filed(name, interval=0.1)
    latency = time.monotonic() - dropped
    assert outcome == "submitted", door.error(name)
    receipt = door.receipt(name)
    assert receipt["user"] == "alice"
    [job] = [j for j in slurm_jobs() if j["job_id"] == receipt["job_id"]]
    assert (job["user_name"], job["name"]) == ("alice", name)
    return latency


def assert_refused_unread(door: Door, name: str, size: int, limit: int) -> None:
    assert door.wait_filed(name) == "failed"
    error = door.error(name)
    assert f"the file is {size} bytes" in error, error
    assert f"the limit is {limit} bytes" in error, error
    assert "it was not read" in error, error
    assert (door.jobs_dir / "failed" / name).lstat().st_size == size
    assert not (door.submit / name).exists()


def make_big(run_as: RunAs, user: str, path: Path, kind: str, limit: int) -> int:
    """Create ``path`` as ``user``: sparse with truncate, or real bytes one over the limit."""
    if kind == "one byte over":
        head = "#!/bin/bash\n#K8S_IMAGE=nas-hub.local:5407/alpine:latest\necho hi\n"
        content = head + "#" * (limit + 1 - len(head) - 1) + "\n"
        drop_as(run_as, user, path, content)
        return limit + 1
    size = {"8G": 8 << 30, "1T": 1 << 40}[kind]
    run_as(user, ["truncate", "-s", str(size), str(path)], check=True)
    return size


@pytest.mark.parametrize(
    ("kind", "in_folder"),
    [("8G", False), ("1T", False), ("one byte over", False), ("8G", True)],
    ids=["sparse-8G", "sparse-1T", "one-byte-over-the-limit", "sparse-8G-in-bobs-folder"],
)
def test_a_huge_file_does_not_hold_up_the_next_drop_and_is_refused_unread(
    door: Door, run_as: RunAs, limit: int, kind: str, in_folder: bool
) -> None:
    door.start("watcher")
    door.start("validator")
    run = uuid.uuid4().hex[:6]
    big_name, hello_name = f"{run}-big.sh", f"{run}-hello.sh"
    folder = door.submit
    if in_folder:
        folder = door.submit / "bob"
        run_as("bob", ["mkdir", str(folder)], check=True)

    # bob drops the huge file; alice drops her hello.sh right after.
    size = make_big(run_as, "bob", folder / big_name, kind, limit)
    latency = drop_hello_and_measure(door, run_as, hello_name)
    print(f"\nmeasured: alice's hello.sh dropped -> receipt in {latency:.2f} s ({kind} present)")

    assert_refused_unread(door, big_name, size, limit)
    assert door.error(big_name).startswith(f"slurm-k8s did not submit {big_name}")
    assert slurm_jobs(user="bob", name_part=run) == []
    assert accounted_jobs("bob", run) == []


def test_a_file_that_grows_after_it_was_detected_is_refused_on_its_new_size(
    door: Door, run_as: RunAs, limit: int
) -> None:
    run = uuid.uuid4().hex[:6]
    grow, hello = f"{run}-grow.sh", f"{run}-hello.sh"
    # Only the watcher runs: bob's small valid script is detected and its event queued...
    door.start("watcher")
    drop_as(run_as, "bob", door.submit / grow, held_hello(grow))
    wait_for(
        f"the watcher to publish {grow}",
        lambda: door.published(door.submit / grow),
        DEADLINE_S,
        interval=0.2,
    )
    # ...then bob turns it into an 8 GB file before the validator looks at it.
    run_as("bob", ["truncate", "-s", "8G", str(door.submit / grow)], check=True)
    door.start("validator")
    latency = drop_hello_and_measure(door, run_as, hello)
    print(f"\nmeasured: alice's hello.sh dropped -> receipt in {latency:.2f} s (grown file)")

    # The first event is stale (the file changed); the watcher publishes the grown file, unread.
    assert_refused_unread(door, grow, 8 << 30, limit)
    assert slurm_jobs(user="bob", name_part=run) == []
    assert accounted_jobs("bob", run) == []


def test_a_file_that_keeps_growing_does_not_hold_up_anyone(
    door: Door, run_as: RunAs, limit: int
) -> None:
    door.start("watcher")
    door.start("validator")
    run = uuid.uuid4().hex[:6]
    grow, hello = f"{run}-growing.sh", f"{run}-hello.sh"
    path = door.submit / grow
    # bob's file grows by 1 GB (sparse) every 0.2 s, like a never-ending copy.
    grower = subprocess.Popen(
        [
            "runuser",
            "-u",
            "bob",
            "--",
            "sh",
            "-c",
            'i=1; while :; do truncate -s "${i}G" "$0" || exit 1; i=$((i+1)); sleep 0.2; done',
            str(path),
        ],
        cwd="/tmp",
    )
    try:
        wait_for(f"{grow} to exist", path.exists, DEADLINE_S, interval=0.1)
        latency = drop_hello_and_measure(door, run_as, hello)
        print(f"\nmeasured: alice's hello.sh dropped -> receipt in {latency:.2f} s (growing file)")
        assert door.outcome(grow) is None  # never settled while it grew
    finally:
        grower.send_signal(signal.SIGTERM)
        grower.wait(timeout=30)
    # Once it stops growing it settles and is filed (runuser may take 2 s to stop the loop, so
    # the file may already be gone from submit/): its final size is the one in failed/.
    assert door.wait_filed(grow) == "failed"
    assert_refused_unread(door, grow, (door.jobs_dir / "failed" / grow).lstat().st_size, limit)
    assert slurm_jobs(user="bob", name_part=run) == []


def test_endless_and_non_regular_entries_are_answered_unopened_without_holding_anyone_up(
    door: Door, run_as: RunAs
) -> None:
    # Things that never end when read: a FIFO nobody writes to, a link to /dev/zero, a link to
    # a huge file elsewhere; and a folder too deep to be read. Judged by lstat, none is opened:
    # each is moved to failed/ as it is, with the reason; alice's drop goes through meanwhile.
    door.start("watcher")
    door.start("validator")
    run = uuid.uuid4().hex[:6]
    far = door.nas.nas_root / "home" / "bob" / f"{run}-elsewhere.bin"  # bob's real home
    names = {"fifo": f"{run}-fifo.sh", "zero": f"{run}-zero.sh", "far": f"{run}-far.sh"}
    folder = door.submit / f"{run}-bob"
    deep = folder / f"{run}-deep"
    try:
        run_as("bob", ["truncate", "-s", "8G", str(far)], check=True)
        run_as("bob", ["mkfifo", str(door.submit / names["fifo"])], check=True)
        run_as("bob", ["ln", "-s", "/dev/zero", str(door.submit / names["zero"])], check=True)
        run_as("bob", ["ln", "-s", str(far), str(door.submit / names["far"])], check=True)
        run_as("bob", ["mkdir", "-p", str(deep)], check=True)
        drop_as(run_as, "bob", deep / "hello.sh", HELLO_TEXT)
        latency = drop_hello_and_measure(door, run_as, f"{run}-hello.sh")
        print(f"\nmeasured: alice's hello.sh dropped -> receipt in {latency:.2f} s (fifo, links)")
        failed = door.jobs_dir / "failed"
        for name in names.values():
            assert door.wait_filed(name) == "failed"
            assert "not a regular file" in door.error(name)
            assert (failed / name).is_symlink() or stat.S_ISFIFO((failed / name).lstat().st_mode)
        assert door.wait_filed(deep.name) == "failed"
        assert "folder inside a sub-folder" in door.error(deep.name)
        assert (failed / deep.name / "hello.sh").is_file()  # moved whole, nothing submitted
        assert (failed / f"{deep.name}.error").stat().st_uid == pwd.getpwnam("bob").pw_uid
        assert far.stat().st_size == 8 << 30  # the link's target was never touched
        assert slurm_jobs(user="bob", name_part=run) == []
    finally:
        far.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    ("account", "in_folder"),
    [("daemon", False), ("bin", False), ("daemon", True)],
    ids=["daemon", "bin", "daemon-in-a-sub-folder"],
)
def test_a_file_owned_by_a_system_account_is_refused_and_never_submitted(
    door: Door, run_as: RunAs, account: str, in_folder: bool
) -> None:
    door.start("watcher")
    door.start("validator")
    owner = pwd.getpwnam(account)
    run = uuid.uuid4().hex[:6]
    name = f"{run}-sys.sh"
    folder = door.submit / f"{run}-dir" if in_folder else door.submit
    folder.mkdir(exist_ok=True)
    # Written whole in a hidden name, then given to the account and renamed in: what an
    # operator's script (or a service writing into the NAS) would leave there.
    staging = folder / f".{name}"
    staging.write_text(held_hello(name))
    os.chown(staging, owner.pw_uid, owner.pw_gid)
    staging.rename(folder / name)

    assert door.wait_filed(name) == "failed"
    error = door.error(name)
    assert (
        f"the file is owned by {account} (uid {owner.pw_uid}); "
        "files of system accounts are not submitted"
    ) in error, error
    assert (door.jobs_dir / "failed" / f"{name}.error").stat().st_uid == owner.pw_uid
    assert slurm_jobs(name_part=run) == []  # not as the account, not as anyone
    assert [j["job_id"] for j in slurm_jobs(user=account)] == []
    assert accounted_jobs(account, run) == []
