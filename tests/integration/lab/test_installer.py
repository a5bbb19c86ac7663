"""slurm/install.sh, the Slurm-node installer: idempotent, checks what it installed, keeps a
site's policy, and passes its own check on the lab node (which it installed, via
lab/slurm/install-hooks.sh).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import lab_unavailable

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
INSTALLER = REPO / "slurm" / "install.sh"


def _install(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installer into a scratch tree: nothing of the lab's /etc is touched."""
    env = {
        **os.environ,
        "SLURM_ETC": str(tmp / "etc-slurm"),
        "SLURMK8S_ETC": str(tmp / "etc-slurm-k8s"),
        "SLURMK8S_PREFIX": str(tmp / "opt"),
    }
    return subprocess.run(
        ["bash", str(INSTALLER), "--no-venv", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.fixture
def services_env(tmp_path: Path) -> Path:
    path = tmp_path / "services.env"
    path.write_text("AMQP_URL=amqp://u:p@broker:5672/slurm-k8s\nNAS_ROOT=/mnt/test-k8s\n")
    return path


def test_a_second_run_installs_nothing_and_both_pass_the_check(
    tmp_path: Path, services_env: Path
) -> None:
    first = _install(tmp_path, "--env", str(services_env))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installed" in first.stderr
    assert first.stdout.rstrip().endswith("all ok")
    # No slurm.conf in the scratch tree: the line to add is printed.
    assert f"Include {tmp_path}/etc-slurm/slurm-k8s.conf" in first.stderr
    prolog = tmp_path / "etc-slurm" / "slurm-k8s" / "prolog"
    assert prolog.stat().st_mode & 0o777 == 0o755
    env_file = tmp_path / "etc-slurm-k8s" / "services.env"
    assert env_file.stat().st_mode & 0o777 == 0o600

    second = _install(tmp_path, "--env", str(services_env))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "installed" not in second.stderr
    assert second.stdout.rstrip().endswith("all ok")


def test_the_check_names_a_changed_file_and_a_missing_setting(
    tmp_path: Path, services_env: Path
) -> None:
    assert _install(tmp_path, "--env", str(services_env)).returncode == 0
    prolog = tmp_path / "etc-slurm" / "slurm-k8s" / "prolog"
    prolog.write_text(prolog.read_text() + "# edited by hand\n")
    env_file = tmp_path / "etc-slurm-k8s" / "services.env"
    env_file.write_text("NAS_ROOT=/mnt/test-k8s\n")

    check = _install(tmp_path, "--check")
    assert check.returncode == 1
    assert f"FAIL  {prolog} differs from slurm/hook" in check.stdout
    assert f"FAIL  {env_file} does not set AMQP_URL" in check.stdout
    assert "2 problem(s)" in check.stdout

    # Installing again repairs the file; the site's services.env is the site's to fix.
    again = _install(tmp_path)
    assert f"FAIL  {prolog}" not in again.stdout
    assert again.returncode == 1


def test_a_sites_policy_is_kept_unless_one_is_given(tmp_path: Path, services_env: Path) -> None:
    policy = tmp_path / "etc-slurm-k8s" / "policy.conf"
    policy.parent.mkdir(parents=True)
    policy.write_text("max_cpus = 1\n")
    kept = _install(tmp_path, "--env", str(services_env))
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert policy.read_text() == "max_cpus = 1\n"
    assert "kept the site's" in kept.stderr

    given = _install(tmp_path, "--policy", str(REPO / "slurm" / "policy.conf"))
    assert given.returncode == 0, given.stdout + given.stderr
    assert policy.read_text() == (REPO / "slurm" / "policy.conf").read_text()


def test_the_lab_node_is_installed_by_the_installer_and_passes_its_check() -> None:
    if not Path("/etc/slurm/slurm.conf").is_file():
        lab_unavailable("no Slurm configuration at /etc/slurm/slurm.conf")
    runs = [
        subprocess.run(
            ["bash", str(REPO / "lab" / "slurm" / "install-hooks.sh")],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "slurm/install.sh: all ok" in run.stderr
    assert "installed" not in runs[1].stderr
