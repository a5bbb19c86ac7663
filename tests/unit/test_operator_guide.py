"""docs/operator-guide.md lists every setting with the default the code has.

The guide's tables were generated from the settings classes; this keeps them true when a
setting is added, renamed or given another default without the page.
"""

import dataclasses
import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from services.collector.config import CollectorSettings
from services.hooks.settings import HookSettings
from services.launcher.config import LauncherSettings
from services.runner.config import RunnerSettings
from services.validator.config import ValidatorSettings
from services.watcher.config import WatcherSettings
from shared.config import BrokerSettings, NasSettings, TelemetrySettings
from shared.jobscript.policy import Policy
from shared.registry import RegistrySettings

pytestmark = pytest.mark.unit

GUIDE = Path(__file__).parents[2] / "docs" / "operator-guide.md"
SERVICE_SETTINGS: tuple[type[BaseSettings], ...] = (
    BrokerSettings,
    TelemetrySettings,
    NasSettings,
    RegistrySettings,
    WatcherSettings,
    ValidatorSettings,
    LauncherSettings,
    CollectorSettings,
)
HOOK_VARIABLES = {
    "AMQP_URL": "amqp_url",
    "HOOKS_SPOOL_DIR": "spool_dir",
    "HOOKS_LOG_FILE": "log_file",
    "HOOKS_PUBLISH_TIMEOUT": "publish_timeout_s",
    "HOOKS_FLUSH_TIMEOUT": "flush_timeout_s",
    "HOOKS_FLUSH_MAX_BACKOFF": "flush_max_backoff_s",
}
"""The hook reads these names in ``load_settings`` (not from field metadata)."""


def _documented() -> dict[str, set[str]]:
    """Each ``| `NAME` | default |`` row of the guide: name -> the defaults shown for it."""
    rows: dict[str, set[str]] = {}
    for match in re.finditer(r"^\| `([A-Za-z0-9_]+)` \| ([^|]+) \|", GUIDE.read_text(), re.M):
        rows.setdefault(match[1], set()).add(match[2].strip())
    return rows


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if value == "":
        return '`""`'
    if isinstance(value, tuple):
        return f"`{' '.join(str(v) for v in value)}`"
    return f"`{value}`"


def _expected() -> dict[str, str]:
    expected: dict[str, str] = {}
    for cls in SERVICE_SETTINGS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            expected[field.alias or (prefix + name).upper()] = _shown(field.default)
    runner = {
        f.metadata["env"]: "required" if f.default is dataclasses.MISSING else _shown(f.default)
        for f in dataclasses.fields(RunnerSettings)
    }
    hooks = HookSettings()
    hook = {env: _shown(getattr(hooks, attr)) for env, attr in HOOK_VARIABLES.items()}
    policy = {
        name: _shown(str(f.default).lower() if isinstance(f.default, bool) else f.default)
        for name, f in Policy.model_fields.items()
    }
    return {**runner, **hook, **policy, **expected}


def test_every_setting_is_documented_with_its_default() -> None:
    documented = _documented()
    wrong = {
        name: (default, sorted(documented.get(name, set())))
        for name, default in _expected().items()
        if default not in documented.get(name, set())
    }
    assert not wrong, f"docs/operator-guide.md is missing or wrong for: {wrong}"


def test_hook_variables_are_the_ones_the_hook_reads() -> None:
    source = (Path(__file__).parents[2] / "services" / "hooks" / "settings.py").read_text()
    read = set(re.findall(r'"((?:HOOKS|AMQP)_[A-Z_]+)"', source)) - {"HOOKS_ENV_FILE"}
    assert read == set(HOOK_VARIABLES)
