"""The runner's settings: the batch step's environment, then ``/etc/slurm-k8s/runner.env``.

Slurm hands the batch step the submitter's environment, so nothing here is required but the
job id: every default matches a standard install (the lab's NAS at /mnt/test-k8s). A frozen
dataclass read with the standard library, not pydantic-settings like the services: the
runner exists once per running job, and those two packages alone would double its memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

ENV_FILE = Path("/etc/slurm-k8s/runner.env")
NAS_ROOT = Path("/mnt/test-k8s")
_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise ValueError(f"not a boolean: {raw!r}")


def _env(name: str, parse: Callable[[str], Any]) -> dict[str, Any]:
    """A field's metadata: read from the variable ``name`` with ``parse``."""
    return {"env": name, "parse": parse}


@dataclass(frozen=True)
class RunnerSettings:
    """Which run to follow, where its credential is, and how patient to be."""

    job_id: int = field(metadata=_env("SLURM_JOB_ID", int))
    restart_count: int = field(default=0, metadata=_env("SLURM_RESTART_COUNT", int))
    """Set by Slurm only once the job has been requeued; absent means run 0."""
    node: str = field(default="", metadata=_env("SLURMD_NODENAME", str))
    stdout_path: str = field(default="", metadata=_env("SLURM_K8S_STDOUT", str))
    nas_root: Path = field(default=NAS_ROOT, metadata=_env("NAS_ROOT", Path))
    handoff_timeout_s: float = field(default=600.0, metadata=_env("RUNNER_HANDOFF_TIMEOUT", float))
    """How long to wait for the launcher's credential; the launcher normally needs well under
    a second, a longer wait covers a launcher restart."""
    poll_s: float = field(default=0.5, metadata=_env("RUNNER_POLL", float))
    """Pod status reads until the container runs, and while it stops: one GET each, for a few
    seconds per job."""
    running_poll_s: float = field(default=10.0, metadata=_env("RUNNER_RUNNING_POLL", float))
    """Pod status reads while the container runs. The end of the log stream wakes the runner
    at once, so this only bounds how late an end without one is seen; slow enough that a
    thousand running jobs cost the API server ~100 GETs/s."""
    pull_grace_s: float = field(default=20.0, metadata=_env("RUNNER_PULL_GRACE", float))
    """An image pull may fail this long (kubelet retries) before the job fails."""
    start_timeout_s: float = field(default=180.0, metadata=_env("RUNNER_START_TIMEOUT", float))
    """The kubelet must acknowledge the Pod within this (else: node not ready, requeue)."""
    delete_grace_s: int = field(default=10, metadata=_env("RUNNER_DELETE_GRACE", int))
    """Grace for the container on scancel/timeout; well inside KillWait (30 s)."""
    gone_timeout_s: float = field(default=25.0, metadata=_env("RUNNER_GONE_TIMEOUT", float))
    """How long to wait for the deleted Pod to disappear (< KillWait)."""
    split_streams: bool = field(default=True, metadata=_env("RUNNER_SPLIT_STREAMS", _flag))
    """With a separate --error file, read stdout and stderr as separate streams (the API's
    stream=Stdout|Stderr, Kubernetes ≥ 1.32 with PodLogsQuerySplitStreams)."""

    def __post_init__(self) -> None:
        if self.job_id <= 0:
            raise ValueError(f"SLURM_JOB_ID must be a positive job id, not {self.job_id}")
        if self.restart_count < 0:
            raise ValueError(f"SLURM_RESTART_COUNT must be >= 0, not {self.restart_count}")
        if self.poll_s <= 0 or self.running_poll_s <= 0:
            raise ValueError("RUNNER_POLL and RUNNER_RUNNING_POLL must be > 0")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path = ENV_FILE
    ) -> RunnerSettings:
        """Settings from ``environ`` (default: this process's), the env file filling gaps.

        Raises:
            ValueError: a value does not parse, or ``SLURM_JOB_ID`` is missing.
        """
        values = {**read_env_file(env_file), **(os.environ if environ is None else environ)}
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = values.get(name)
            if raw is None:
                if f.default is MISSING:
                    raise ValueError(f"{name} is not set")
                continue
            try:
                kwargs[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ValueError(f"{name}={raw!r}: {exc}") from exc
        return cls(**kwargs)

    @property
    def state_dir(self) -> Path:
        """The services' bookkeeping folder on the NAS (as ``NasSettings.state_dir``)."""
        return self.nas_root / "slurm-jobs" / ".state"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional ``export`` and quotes); {} if unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
