from pathlib import Path

import pytest

from services.hooks.publishing import EVENTS_EXCHANGE
from services.hooks.settings import load_settings, parse_env_file
from shared.broker import topology

pytestmark = pytest.mark.unit


def test_env_file_lines_are_parsed() -> None:
    text = "# site settings\nexport AMQP_URL='amqp://u:p@h:5672/v'\nNAS_ROOT=/mnt/nas\n\nnoise\n"
    assert parse_env_file(text) == {"AMQP_URL": "amqp://u:p@h:5672/v", "NAS_ROOT": "/mnt/nas"}


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env_file = tmp_path / "services.env"
    env_file.write_text("AMQP_URL=amqp://file/\nHOOKS_SPOOL_DIR=/spool\n")
    settings = load_settings({"HOOKS_ENV_FILE": str(env_file), "AMQP_URL": "amqp://env/"})
    assert settings.amqp_url == "amqp://env/"
    assert settings.spool_dir == Path("/spool")


def test_unreadable_file_leaves_defaults(tmp_path: Path) -> None:
    settings = load_settings({"HOOKS_ENV_FILE": str(tmp_path / "missing")})
    assert settings.publish_timeout_s == 1.0


def test_hook_publishes_to_the_projects_exchange() -> None:
    assert EVENTS_EXCHANGE == topology.EVENTS_EXCHANGE
