"""The Pod's run shim (``podspec.RUN_SHIM``), run on this machine with the tools it gets in a Pod.

The tools are Debian's bash-static and busybox-static (what ``slurm-k8s-tools`` carries);
"the image" is this machine, so interpreters that do not exist here stand for ones missing
from an image.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from services.launcher.podspec import RUN_SHIM, SCRIPT_DIR

pytestmark = pytest.mark.unit

STATIC_BASH = Path("/bin/bash-static")
BUSYBOX = Path("/bin/busybox")


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    if not (STATIC_BASH.exists() and BUSYBOX.exists()):
        pytest.fail("bash-static and busybox-static are lab packages (lab/packages.sh)")
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(STATIC_BASH, tools / "bash")
    shutil.copy(BUSYBOX, tools / "busybox")
    for name in ("results", "dest", "workspace"):
        (tmp_path / name).mkdir()
    return tools


def shim(tools: Path, program: Path, workdir: Path | None = None) -> list[str]:
    base = tools.parent
    return [
        str(tools / "bash"),
        "-c",
        RUN_SHIM,
        "slurm-k8s-job",
        str(tools),
        str(program),
        str(workdir or base / "workspace"),
        str(base / "results"),
        str(base / "dest"),
    ]


def run(
    tools: Path, text: str, name: str = "script", **kw: Path
) -> subprocess.CompletedProcess[str]:
    program = tools.parent / name
    program.write_text(text)
    return subprocess.run(
        shim(tools, program, **kw), capture_output=True, text=True, timeout=30, check=False
    )


def test_a_bash_script_runs_under_bash_when_the_image_has_no_bash(tools: Path) -> None:
    done = run(tools, '#!/nonexistent/bin/bash\nfor i in {1..10}; do echo "iteration $i"; done\n')
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"iteration {i}" for i in range(1, 11)]
    assert "running it with the bash slurm-k8s provides (5." in done.stderr


def test_env_bash_missing_from_path_gets_the_static_bash(tools: Path) -> None:
    done = run(tools, "#!/usr/bin/env no-such-bash-dir/bash\necho ${BASH_VERSINFO[0]}\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"


def test_any_other_missing_interpreter_fails_at_once_with_the_reason(tools: Path) -> None:
    done = run(tools, "#!/nonexistent/python3\nprint('never')\n")
    assert done.returncode == 127
    assert done.stdout == ""
    assert "the interpreter /nonexistent/python3 is not in the image" in done.stderr


def test_an_interpreter_the_image_has_is_used(tools: Path) -> None:
    done = run(tools, '#!/bin/sh\necho "$0"\n')
    assert done.returncode == 0
    assert done.stdout.strip().endswith("/script")
    assert done.stderr == ""


def test_a_program_without_shebang_runs_by_its_name(tools: Path) -> None:
    assert run(tools, "print(6 * 7)\n", name="train.py").stdout.strip() == "42"
    done = run(tools, "echo no idea\n", name="train.bin")
    assert done.returncode == 127
    assert "no #! line" in done.stderr


def test_the_exit_code_is_the_program_s(tools: Path) -> None:
    assert run(tools, "#!/bin/sh\nexit 3\n").returncode == 3


def test_starts_in_the_workdir_made_as_the_user_if_missing(tools: Path) -> None:
    where = tools.parent / "workspace" / "run" / "a"
    done = run(tools, "#!/bin/sh\npwd\n", workdir=where)
    assert done.stdout.strip() == str(where)
    blocked = tools.parent / "file"
    blocked.write_text("")
    done = run(tools, "#!/bin/sh\npwd\n", workdir=blocked / "sub")
    assert done.returncode == 1
    assert "cannot start in the working directory" in done.stderr


def test_results_are_merged_and_what_the_job_copied_is_kept(tools: Path) -> None:
    base = tools.parent
    text = (
        "#!/bin/bash\n"
        f"cd {base}/results\n"
        "echo model > model.txt; echo metrics > metrics.json; mkdir -p logs; echo l > logs/1\n"
        "echo hidden > .hidden\n"
        f"cp model.txt {base}/dest/model.txt; echo changed-by-job > {base}/dest/model.txt\n"
        "exit 4\n"
    )
    done = run(tools, text)
    assert done.returncode == 4
    dest = base / "dest"
    assert (dest / "model.txt").read_text() == "changed-by-job\n"
    assert (dest / "metrics.json").read_text() == "metrics\n"
    assert (dest / "logs" / "1").read_text() == "l\n"
    assert (dest / ".hidden").exists()


def test_results_are_not_copied_through_a_symlinked_destination(tools: Path) -> None:
    base = tools.parent
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (base / "dest").rmdir()
    (base / "dest").symlink_to(elsewhere)
    done = run(tools, f"#!/bin/sh\necho x > {base}/results/a\n")
    assert done.returncode == 0
    assert list(elsewhere.iterdir()) == []
    assert "is not your own directory" in done.stderr


def test_sigterm_reaches_the_program_and_its_code_comes_back(tools: Path) -> None:
    program = tools.parent / "script"
    program.write_text(
        "#!/bin/bash\n"
        "trap 'echo got TERM; kill $sleeper; exit 143' TERM\n"
        "sleep 30 & sleeper=$!\n"
        "echo started\n"
        "wait\n"
    )
    with subprocess.Popen(shim(tools, program), stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 143
        assert "got TERM" in proc.stdout.read()


def test_the_shim_calls_the_job_s_own_script_the_job_script() -> None:
    assert f'{SCRIPT_DIR}/*) shown="the job script"' in RUN_SHIM


def test_a_killed_program_gives_its_code_without_a_notice_from_the_shim(tools: Path) -> None:
    done = run(tools, "#!/bin/sh\nkill -9 $$\n")
    assert done.returncode == 137
    assert done.stderr == ""
