from pathlib import Path

import pytest

from services.runner.config import RunnerSettings

pytestmark = pytest.mark.unit


def test_the_job_s_environment_is_read_with_defaults(tmp_path: Path) -> None:
    s = RunnerSettings.from_env(
        {"SLURM_JOB_ID": "42", "SLURMD_NODENAME": "vm", "RUNNER_SPLIT_STREAMS": "false"},
        tmp_path / "absent.env",
    )
    assert (s.job_id, s.restart_count, s.node, s.split_streams) == (42, 0, "vm", False)
    assert s.state_dir == Path("/mnt/test-k8s/slurm-jobs/.state")
    assert (s.poll_s, s.running_poll_s, s.delete_grace_s) == (0.5, 10.0, 10)


def test_the_env_file_fills_what_the_environment_does_not_set(tmp_path: Path) -> None:
    env_file = tmp_path / "runner.env"
    env_file.write_text(
        "# site settings\nexport NAS_ROOT='/srv/nas'\nRUNNER_POLL=0.25\nRUNNER_GONE_TIMEOUT=9\n"
    )
    s = RunnerSettings.from_env({"SLURM_JOB_ID": "1", "RUNNER_POLL": "2"}, env_file)
    assert (s.nas_root, s.poll_s, s.gone_timeout_s) == (Path("/srv/nas"), 2.0, 9.0)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "SLURM_JOB_ID is not set"),
        ({"SLURM_JOB_ID": "x"}, "SLURM_JOB_ID='x'"),
        ({"SLURM_JOB_ID": "0"}, "SLURM_JOB_ID must be"),
        ({"SLURM_JOB_ID": "1", "SLURM_RESTART_COUNT": "-1"}, "SLURM_RESTART_COUNT"),
        ({"SLURM_JOB_ID": "1", "RUNNER_POLL": "0"}, "RUNNER_POLL"),
        ({"SLURM_JOB_ID": "1", "RUNNER_SPLIT_STREAMS": "maybe"}, "RUNNER_SPLIT_STREAMS"),
    ],
)
def test_a_missing_or_bad_value_is_a_value_error_naming_it(
    tmp_path: Path, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        RunnerSettings.from_env(environ, tmp_path / "absent.env")
