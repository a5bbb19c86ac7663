"""Bounded logs: rotation past a size, at most KEEP old files, nothing lost in the pipe."""

import subprocess
import sys
from pathlib import Path

import pytest

from services.hooks.hooklog import HookLog
from shared.logcap import rotate_if_over

pytestmark = pytest.mark.unit


def test_a_log_over_its_size_is_shifted_and_the_oldest_dropped(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    for n in range(5):
        log.write_text(f"generation {n}\n" * 10)
        assert rotate_if_over(log, max_bytes=100, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.log.1", "x.log.2"]
    assert (tmp_path / "x.log.1").read_text().startswith("generation 4")
    assert (tmp_path / "x.log.2").read_text().startswith("generation 3")


def test_a_small_or_missing_log_is_left_alone(tmp_path: Path) -> None:
    assert not rotate_if_over(tmp_path / "missing.log", max_bytes=10)
    small = tmp_path / "small.log"
    small.write_text("x\n")
    assert not rotate_if_over(small, max_bytes=10)
    assert small.read_text() == "x\n"


def test_the_pipe_keeps_every_line_within_the_bound(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    lines = "".join(f'{{"n": {n}}}\n' for n in range(2000))
    subprocess.run(
        [sys.executable, "-m", "shared.logcap", str(log), "4000", "3"],
        input=lines.encode(),
        check=True,
        timeout=60,
    )
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == [
        "service.log",
        "service.log.1",
        "service.log.2",
        "service.log.3",
    ]
    assert all(p.stat().st_size < 4000 + 20 for p in files)
    kept = "".join(p.read_text() for p in reversed(files[1:])) + files[0].read_text()
    assert lines.endswith(kept)  # the newest lines, in order, none torn


def test_the_hooks_log_rotates_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "services.hooks.hooklog.rotate_if_over",
        lambda path: rotate_if_over(path, max_bytes=300, keep=2),
    )
    log = HookLog(tmp_path / "hooks.log", "prolog")
    for n in range(40):
        log.write("event.published", n=n)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["hooks.log", "hooks.log.1", "hooks.log.2"]
    assert '"n": 39' in (tmp_path / "hooks.log").read_text()
