"""Settings read from the environment, one frozen class per concern.

Each service composes these with its own prefixed settings and parses them once in its
``__main__``; nothing reads ``os.environ`` elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class BrokerSettings(BaseSettings):
    """How to reach RabbitMQ, and how hard to try."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    amqp_url: str = Field(
        default="amqp://localhost:5672/slurm-k8s",
        alias="AMQP_URL",
        description="AMQP_URL. The lab prints one with the services' own, non-guest user.",
    )
    prefetch: int = Field(
        default=8,
        alias="AMQP_PREFETCH",
        ge=1,
        description="AMQP_PREFETCH. Handlers are quick and idempotent; a few in flight hides "
        "round trips without letting one consumer hoard a backlog.",
    )
    heartbeat_s: int = Field(
        default=30,
        alias="AMQP_HEARTBEAT",
        description="Dead TCP connections are otherwise noticed only after ~11 min (RabbitMQ "
        "reliability guide).",
    )
    max_retries: int = Field(
        default=40,
        alias="AMQP_MAX_RETRIES",
        description="Transient failures retried with backoff (capped at 2 min) before "
        "dead-lettering: 40 steps wait out about an hour of slurmctld or the API server being "
        "down. A dead-lettered file event would leave its file waiting in submit/ until an "
        "operator replays it, so the budget errs long.",
    )
    connect_attempts: int = Field(
        default=30,
        alias="AMQP_CONNECT_ATTEMPTS",
        description="Attempts to (re)connect before giving up; covers a broker restart.",
    )
    handler_budget_s: float = Field(
        default=600.0,
        alias="AMQP_HANDLER_BUDGET",
        gt=0,
        description="AMQP_HANDLER_BUDGET. Seconds one message may take; past it the message is "
        "retried (a transient failure) and the stuck worker left behind. Every external call has "
        "its own, shorter timeout, so only a wedged library reaches it.",
    )


class TelemetrySettings(BaseSettings):
    """Where traces, metrics and logs go."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    otel_traces_exporter: str = Field(
        default="log",
        alias="OTEL_TRACES_EXPORTER",
        description="OTEL_TRACES_EXPORTER: 'log' (a span.ended line per span in the service's "
        "log), 'otlp' (if opentelemetry-exporter-otlp-proto-http is installed; endpoint from "
        "OTEL_EXPORTER_OTLP_ENDPOINT), 'file' (JSON lines in OTEL_TRACES_FILE), 'console' or "
        "'none'. Only services configure telemetry; CLIs and unit tests stay quiet.",
    )
    otel_traces_file: Path | None = Field(
        default=None,
        alias="OTEL_TRACES_FILE",
        description="OTEL_TRACES_FILE: where the 'file' exporter appends spans.",
    )
    metrics_port: int | None = Field(
        default=None,
        alias="METRICS_PORT",
        ge=0,
        le=65535,
        description="METRICS_PORT: serve Prometheus' text format on /metrics there (unset: no "
        "endpoint). Each service needs its own port on a shared host.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        alias="METRICS_HOST",
        description="METRICS_HOST: the metrics endpoint's address ('0.0.0.0' for a scraper "
        "on another host or outside the container).",
    )
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    log_format: str = Field(
        default="json",
        alias="LOG_FORMAT",
        description="'json' for services (one object a line), 'console' for people.",
    )


class NasSettings(BaseSettings):
    """Where the NAS is mounted, on the services' hosts and inside job Pods alike."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    nas_root: Path = Field(default=Path("/mnt/test-k8s"), alias="NAS_ROOT")

    @property
    def jobs_dir(self) -> Path:
        """The seed's ``slurm-jobs`` folder."""
        return self.nas_root / "slurm-jobs"

    @property
    def submit_dir(self) -> Path:
        """Where users drop job files."""
        return self.jobs_dir / "submit"

    @property
    def failed_dir(self) -> Path:
        """Where refused files go, each with a ``.error`` file beside it."""
        return self.jobs_dir / "failed"

    @property
    def submitted_dir(self) -> Path:
        """Where accepted files go, each with a ``.receipt.json`` beside it."""
        return self.jobs_dir / "submitted"

    @property
    def state_dir(self) -> Path:
        """Services' own bookkeeping on the NAS (not for users)."""
        return self.jobs_dir / ".state"
