"""lab/nas/up.sh makes the NAS a filesystem of its own, migrating a plain folder (issue 9, item 6).

Run against a private root, image and state folder (never the lab's NAS): a plain folder with
content (another user's file, a sparse file, a symlink) becomes a mounted, bounded ext4 whose
content is the folder's, the old content is kept aside, and a second run changes nothing.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, lab_unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def private(tmp_path: Path) -> Iterator[dict[str, str]]:
    if os.geteuid() != 0:
        lab_unavailable("loop-mounting an image needs root")
    env = {
        **os.environ,
        "NAS_ROOT": str(tmp_path / "nas"),
        "NAS_IMAGE": str(tmp_path / "nas.img"),
        "NAS_SIZE": "64M",
        "LAB_STATE": str(tmp_path / "state"),
    }
    try:
        yield env
    finally:
        subprocess.run(["umount", env["NAS_ROOT"]], capture_output=True, check=False, timeout=60)


def up(env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", str(REPO / "lab" / "nas" / "up.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_plain_folder_with_content_becomes_a_bounded_filesystem_with_that_content(
    private: dict[str, str],
) -> None:
    root = Path(private["NAS_ROOT"])
    (root / "home" / "bob").mkdir(parents=True)
    (root / "home" / "bob" / "notes.txt").write_text("bob's\n")
    os.chown(root / "home" / "bob" / "notes.txt", 2002, 2002)
    (root / "results").mkdir()
    (root / "results" / "big.bin").touch()
    os.truncate(root / "results" / "big.bin", 1 << 30)  # sparse: must stay sparse in the image
    (root / "link").symlink_to("/etc/passwd")

    said = up(private)

    assert "migrated the plain folder" in said
    assert subprocess.run(["mountpoint", "-q", str(root)], check=False).returncode == 0
    assert (root / "home" / "bob" / "notes.txt").read_text() == "bob's\n"
    assert (root / "home" / "bob" / "notes.txt").stat().st_uid == 2002
    assert (root / "results" / "big.bin").stat().st_size == 1 << 30
    assert os.readlink(root / "link") == "/etc/passwd"
    assert (root / "slurm-jobs" / "submit").is_dir()
    fs = os.statvfs(root)
    assert fs.f_blocks * fs.f_frsize <= 64 << 20  # bounded: the image's size, not the disk's
    [aside] = (Path(private["LAB_STATE"]) / "nas").glob("pre-loop-*")
    assert (aside / "home" / "bob" / "notes.txt").is_file()  # kept, not deleted

    again = up(private)  # idempotent: mounted already, nothing migrated or made

    assert "migrated" not in again
    assert "made" not in again
    assert (root / "home" / "bob" / "notes.txt").read_text() == "bob's\n"
