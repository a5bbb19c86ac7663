"""The hook's settings: the site's ``services.env`` file, overridden by the environment.

Deliberately not pydantic-settings: that import alone costs a tenth of a second, paid on every
job start and end. slurmd gives the prolog a fresh environment, so in production the values
come from the root-only file; the environment wins so tests can point a hook elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENV_FILE = Path("/etc/slurm-k8s/services.env")


@dataclass(frozen=True)
class HookSettings:
    """Where to publish, where to spool and where to log."""

    amqp_url: str = "amqp://localhost:5672/slurm-k8s"
    spool_dir: Path = Path("/var/spool/slurm-k8s/outbox")
    """Local disk, root-only: survives a broker outage and a reboot, unlike /run."""
    log_file: Path = Path("/var/log/slurm-k8s/hooks.log")
    """Never stdout/stderr: slurmd may capture or discard them."""
    publish_timeout_s: float = 1.0
    """Connect/handshake budget of the inline publish: the prolog must stay well under a
    second even when the broker is down; the flusher delivers what this attempt could not."""
    flush_timeout_s: float = 5.0
    """The detached flusher is in no hurry; a loaded broker gets more time."""
    flush_max_backoff_s: float = 60.0
    """Cap of the flusher's retry interval while the broker stays away."""


def parse_env_file(text: str) -> dict[str, str]:
    """Parse ``KEY=VALUE`` lines (``export``, comments and quotes tolerated; no expansion)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load_settings(env: Mapping[str, str]) -> HookSettings:
    """Settings from ``HOOKS_ENV_FILE`` (default /etc/slurm-k8s/services.env) and ``env``.

    An unreadable file is not an error: the defaults and the environment still apply, and
    the event is spooled either way.
    """
    path = Path(env.get("HOOKS_ENV_FILE", str(DEFAULT_ENV_FILE)))
    try:
        merged = parse_env_file(path.read_text())
    except OSError:
        merged = {}
    merged.update(env)
    defaults = HookSettings()
    return HookSettings(
        amqp_url=merged.get("AMQP_URL", defaults.amqp_url),
        spool_dir=Path(merged.get("HOOKS_SPOOL_DIR", str(defaults.spool_dir))),
        log_file=Path(merged.get("HOOKS_LOG_FILE", str(defaults.log_file))),
        publish_timeout_s=_float(merged, "HOOKS_PUBLISH_TIMEOUT", defaults.publish_timeout_s),
        flush_timeout_s=_float(merged, "HOOKS_FLUSH_TIMEOUT", defaults.flush_timeout_s),
        flush_max_backoff_s=_float(merged, "HOOKS_FLUSH_MAX_BACKOFF", defaults.flush_max_backoff_s),
    )


def _float(values: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return default
