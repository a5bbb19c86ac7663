"""The validator's own settings (``VALIDATOR_*``); broker, NAS and telemetry settings are shared.

Parsed once in ``__main__`` and passed down. Every default says why it is what it is.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ValidatorSettings(BaseSettings):
    """How the validator reaches Slurm and how long it waits for it."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="VALIDATOR_")

    sbatch_timeout_s: float = Field(
        default=90.0,
        gt=0,
        description="VALIDATOR_SBATCH_TIMEOUT_S. sbatch itself retries an unreachable "
        "slurmctld for about a minute (MessageTimeout plus its connect retries) before "
        "failing; waiting a little longer lets it report the reason instead of being cut off.",
    )
    query_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="VALIDATOR_QUERY_TIMEOUT_S. squeue/sacct/scontrol look-ups; a slower "
        "answer means the controller is struggling and the message is retried later.",
    )
    lookback_days: int = Field(
        default=7,
        ge=1,
        description="VALIDATOR_LOOKBACK_DAYS. How far back accounting is searched for a "
        "submission key. Redeliveries happen within minutes; a week also covers a validator "
        "that was down over a long weekend.",
    )
    workers: int = Field(
        default=4,
        ge=1,
        le=32,
        description="VALIDATOR_WORKERS. Files validated and submitted at once, each worker "
        "with its own broker connection. Most of a file's time is spent waiting for sbatch "
        "and the NAS, so a few workers keep slurmctld, not this service, the limit of a "
        "burst; each key is still handled by one worker at a time (the journal's lock).",
    )
    crash_at: str = Field(
        default="",
        description="VALIDATOR_CRASH_AT. Test seam: the name of a step ('after-sbatch', "
        "'after-journal', 'after-move') at which the process kills itself with SIGKILL, so "
        "integration tests can prove a crash there makes no duplicate job. Empty in "
        "production.",
    )
