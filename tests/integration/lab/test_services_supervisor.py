"""lab/services.sh (`make up`, `make demo`): each service runs under a supervisor that
restarts it when it dies and stops it, for good, on `stop`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SERVICES = ("watcher", "validator", "launcher", "collector")


def _services(action: str) -> str:
    done = subprocess.run(
        ["bash", str(REPO / "lab" / "services.sh"), action],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return done.stdout


def _status() -> dict[str, tuple[int, int]]:
    """Each running service's (service pid, restarts)."""
    found: dict[str, tuple[int, int]] = {}
    for line in _services("status").splitlines():
        m = re.match(r"(\w+): up, supervisor pid \d+, service pid (\d+), restarts (\d+)", line)
        if m:
            found[m[1]] = (int(m[2]), int(m[3]))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def supervised(require: Callable[[str], None]) -> Iterator[None]:
    for component in ("rabbitmq", "slurm"):
        require(component)
    _services("start")
    try:
        yield
    finally:
        _services("stop")


@pytest.mark.usefixtures("supervised")
def test_a_killed_service_is_restarted_and_stop_ends_them_all() -> None:
    up = wait_for("all four services up", lambda: len(_status()) == 4 and _status(), 60)
    killed = up["watcher"][0]
    os.kill(killed, signal.SIGKILL)

    def restarted() -> tuple[int, int] | None:
        now = _status().get("watcher")
        return now if now and now[0] != killed and _alive(now[0]) else None

    pid, restarts = wait_for("the watcher restarted", restarted, 60)
    assert restarts == 1
    others = _status()
    assert all(others[s] == up[s] for s in SERVICES if s != "watcher")

    _services("stop")
    assert all(line.endswith(": down") for line in _services("status").splitlines())
    assert not any(_alive(p) for p in (pid, *(up[s][0] for s in SERVICES if s != "watcher")))
