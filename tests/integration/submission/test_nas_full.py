"""A full NAS loses nothing (issue 9, item 6): drops wait, answers are whole, all resumes.

The NAS here is a second, tiny filesystem (a 16 MB ext4 image loop-mounted inside the lab's
NAS, ``<NAS>/.full-<id>``), with its own watcher and validator on a throwaway vhost and the
lab's real Slurm. Filling the lab's shared NAS instead would make every other user of the lab
(the lab's services, other tests, the bench) fail at the same time for reasons of ours; the
tiny one is full at once, for us alone, and goes away with the test.

The test fills it with a ballast file *after* the watcher has published the drops, so the
validator meets ENOSPC on its first write (the journal, before any sbatch): nothing may be
submitted, moved or half-answered while it is full, and no service may die. Once the ballast
is removed (always, in ``finally``) every file must be answered whole: a receipt that parses
and names the one Slurm job made for it, or an ``.error`` with its reason.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import NasSettings
from tests.integration.conftest import RunAs, lab_unavailable, wait_for
from tests.integration.submission.test_attacks_nas import Door, held_hello, slurm_jobs
from tests.integration.submission.test_nas_door import drop_as

pytestmark = pytest.mark.integration

SIZE = "16M"
FULL_S = 120.0


@pytest.fixture
def tiny_door(
    lab_env: dict[str, str], vhost_url: str, slurm_ready: str, tmp_path: Path
) -> Iterator[Door]:
    """A door whose NAS is a tiny filesystem of its own; unmounted and removed afterwards."""
    if os.geteuid() != 0:
        lab_unavailable("loop-mounting a filesystem needs root")
    nas_root = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s"))
    image = tmp_path / "full.img"
    root = nas_root / f".full-{uuid.uuid4().hex[:8]}"
    subprocess.run(["truncate", "-s", SIZE, str(image)], check=True, timeout=30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, timeout=60)
    root.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(root)], check=True, timeout=60)
    nas = NasSettings(NAS_ROOT=root)
    env = {**os.environ, **lab_env, "AMQP_URL": vhost_url, "NAS_ROOT": str(root)}
    door = Door(nas, {**env, "LOG_FORMAT": "json"}, tmp_path)
    try:
        for d in (nas.submit_dir, nas.failed_dir, nas.submitted_dir):
            d.mkdir(parents=True)
        nas.submit_dir.chmod(0o1777)
        (root / "home").mkdir()
        for user in ("alice", "bob"):
            (root / "home" / user).symlink_to(nas_root / "home" / user)
        yield door
    finally:
        door.stop()
        if door.jobs:
            subprocess.run(["scancel", *map(str, door.jobs)], check=False, timeout=60)
        subprocess.run(["umount", str(root)], check=False, timeout=60)
        root.rmdir()


def fill(root: Path) -> Path:
    """Write a ballast file until the filesystem refuses another byte; return its path."""
    ballast = root / ".ballast"
    with ballast.open("wb", buffering=0) as handle:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        os.fsync(handle.fileno())
    assert os.statvfs(root).f_bavail == 0
    return ballast


def answers(door: Door) -> list[Path]:
    """Everything in failed/ and submitted/ (hidden temporaries included)."""
    return sorted(p for d in (door.nas.failed_dir, door.nas.submitted_dir) for p in d.iterdir())


def test_a_full_nas_makes_drops_wait_and_everything_is_answered_whole_when_space_returns(
    tiny_door: Door, run_as: RunAs
) -> None:
    door = tiny_door
    run = uuid.uuid4().hex[:6]
    good = [f"{run}-good{i}.sh" for i in range(3)]
    bad = [f"{run}-bad{i}.sh" for i in range(2)]
    door.start("watcher")
    for name in good:
        drop_as(run_as, "alice", door.submit / name, held_hello(name))
    for name in bad:
        text = held_hello(name).replace("#SBATCH --hold\n", "#SBATCH --hold\n#SBATCH --uid=0\n")
        drop_as(run_as, "bob", door.submit / name, text)
    for name in good + bad:
        path = door.submit / name
        wait_for(f"the watcher to publish {name}", lambda p=path: door.published(p), 60, 0.2)

    ballast = fill(door.nas.nas_root)
    try:
        door.start("validator")
        wait_for(
            "the validator to meet the full NAS",
            lambda: "No space left on device" in door.log("validator"),
            FULL_S,
            0.5,
        )
        # Full: every drop waits where it was dropped, nothing is answered or submitted.
        assert sorted(p.name for p in door.submit.iterdir()) == sorted(good + bad)
        assert answers(door) == []
        assert slurm_jobs(name_part=run) == []
        for name, proc in door.procs.items():
            assert proc.poll() is None, f"the {name} died on a full NAS:\n{door.log(name)}"
    finally:
        ballast.unlink()

    for name in good + bad:
        door.wait_filed(name)
    for name in good:
        receipt = door.receipt(name)  # parses: written whole or not at all
        assert receipt["user"] == "alice"
        assert (door.nas.submitted_dir / name).read_text() == held_hello(name)
    for name in bad:
        error = door.error(name)
        assert error.startswith(f"slurm-k8s did not submit {name}: 1 problem(s) to fix\n")
        assert "--uid is not allowed" in error
    assert not [p for p in answers(door) if p.name.startswith(".")], answers(door)
    jobs = slurm_jobs(name_part=run)
    assert sorted(j["name"] for j in jobs) == sorted(good)  # one job each, no doubles
    assert {j["job_id"] for j in jobs} == {door.receipt(n)["job_id"] for n in good}
    assert "Traceback" not in door.log("validator") + door.log("watcher")
