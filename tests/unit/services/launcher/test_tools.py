"""The NAS's tools folder is used only when no one but the launcher's user can change it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.launcher.tools import ToolsUnusable, check_tools

pytestmark = pytest.mark.unit

TOOLS = "slurm-jobs/.tools"


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    folder = tmp_path / TOOLS
    folder.mkdir(parents=True)
    for name in ("bash", "busybox"):
        (folder / name).write_bytes(b"\x7fELF")
        (folder / name).chmod(0o555)
    return tmp_path


def test_a_folder_of_the_launcher_s_user_alone_is_used(nas: Path) -> None:
    assert check_tools(nas, TOOLS) == TOOLS


@pytest.mark.parametrize("where", [".", "slurm-jobs", TOOLS])
def test_a_folder_on_the_way_others_can_write_is_refused(nas: Path, where: str) -> None:
    (nas / where).chmod(0o777)
    with pytest.raises(ToolsUnusable, match="can be changed by someone other"):
        check_tools(nas, TOOLS)


def test_a_tool_others_can_write_or_not_run_is_refused(nas: Path) -> None:
    (nas / TOOLS / "bash").chmod(0o557)
    with pytest.raises(ToolsUnusable, match="bash can be changed"):
        check_tools(nas, TOOLS)
    (nas / TOOLS / "bash").chmod(0o550)
    with pytest.raises(ToolsUnusable, match="not executable"):
        check_tools(nas, TOOLS)


def test_symlinks_are_never_followed(nas: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (nas / TOOLS / "bash").unlink()
    (nas / TOOLS / "bash").symlink_to(elsewhere)
    with pytest.raises(ToolsUnusable, match="cannot be opened safely"):
        check_tools(nas, TOOLS)
    os.rename(nas / "slurm-jobs", elsewhere / "moved")
    (nas / "slurm-jobs").symlink_to(elsewhere / "moved")
    with pytest.raises(ToolsUnusable, match="cannot be opened safely"):
        check_tools(nas, TOOLS)


def test_missing_tools_and_paths_outside_the_nas_are_refused(nas: Path) -> None:
    (nas / TOOLS / "busybox").unlink()
    with pytest.raises(ToolsUnusable, match="busybox cannot be opened"):
        check_tools(nas, TOOLS)
    for bad in ("/etc", "../x", ""):
        with pytest.raises(ToolsUnusable, match="not a path inside the NAS"):
            check_tools(nas, bad)
