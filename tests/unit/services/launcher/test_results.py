"""``results/<jobid>`` is made for the job's owner and never through someone else's entry."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.launcher.results import RESULTS_MODE, ensure_results_dir
from shared.errors import PermanentError

pytestmark = pytest.mark.unit

ALICE, BOB = 2001, 2002


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("chown needs root (the launcher runs as root)")
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o1777)
    return tmp_path


def owned(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    assert stat.S_ISDIR(st.st_mode)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def moved(nas: Path) -> list[Path]:
    return sorted((nas / "results").glob(".slurm-k8s-moved.7.*"))


def test_made_for_the_owner(nas: Path) -> None:
    path = ensure_results_dir(nas, 7, ALICE, ALICE)
    assert path == nas / "results" / "7"
    assert owned(path) == (ALICE, ALICE, RESULTS_MODE)


def test_the_owner_s_own_directory_is_kept_as_it_is(nas: Path) -> None:
    mine = nas / "results" / "7"
    mine.mkdir(mode=0o700)
    os.chown(mine, ALICE, ALICE)
    (mine / "earlier.txt").write_text("from run 0")
    assert ensure_results_dir(nas, 7, ALICE, ALICE) == mine
    assert (mine / "earlier.txt").read_text() == "from run 0"
    assert moved(nas) == []


def test_a_symlink_planted_by_another_user_is_moved_aside_never_followed(nas: Path) -> None:
    target = nas / "target"
    target.mkdir(mode=0o755)
    planted = nas / "results" / "7"
    planted.symlink_to(target)
    os.lchown(planted, BOB, BOB)
    path = ensure_results_dir(nas, 7, ALICE, ALICE)
    assert not path.is_symlink()
    assert owned(path) == (ALICE, ALICE, RESULTS_MODE)
    assert owned(target) == (0, 0, 0o755)  # untouched
    (aside,) = moved(nas)
    assert aside.is_symlink()


def test_a_directory_of_another_user_is_moved_aside(nas: Path) -> None:
    theirs = nas / "results" / "7"
    theirs.mkdir(mode=0o777)
    os.chown(theirs, BOB, BOB)
    path = ensure_results_dir(nas, 7, ALICE, ALICE)
    assert owned(path) == (ALICE, ALICE, RESULTS_MODE)
    (aside,) = moved(nas)
    assert owned(aside)[:2] == (BOB, BOB)


def test_a_file_in_the_way_is_moved_aside(nas: Path) -> None:
    (nas / "results" / "7").write_text("x")
    assert owned(ensure_results_dir(nas, 7, ALICE, ALICE))[0] == ALICE
    assert len(moved(nas)) == 1


def test_a_symlinked_results_folder_is_refused(nas: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (nas / "results").rename(other)
    (nas / "results").symlink_to(other)
    with pytest.raises(PermanentError, match="cannot be opened as a directory"):
        ensure_results_dir(nas, 7, ALICE, ALICE)
    assert list(other.iterdir()) == []


def test_a_results_folder_owned_by_a_user_is_refused(nas: Path) -> None:
    os.chown(nas / "results", BOB, BOB)
    with pytest.raises(PermanentError, match="belongs to uid 2002"):
        ensure_results_dir(nas, 7, ALICE, ALICE)
