"""The services' metrics: the instruments, the handler wrapper that feeds them, a Prometheus page.

Instruments are OpenTelemetry's (``shared.telemetry.meter``); each is documented in
docs/observability.md. ``observed(handler)`` counts what a service's handler did from the
message it got and the events it returned, so handlers stay free of metrics code. Queue depth
is read from the broker when metrics are collected (a passive declare per queue, on a
connection of its own).

``PrometheusEndpoint`` serves the SDK's current readings in Prometheus' text format
(``METRICS_PORT``), from an in-memory reader and the standard library's HTTP server: the
OpenTelemetry Prometheus exporter would be a new dependency (with ``prometheus_client``) for
what is one page of text.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    InMemoryMetricReader,
    MetricsData,
    Sum,
)

from shared.messages import (
    Envelope,
    FileDetected,
    JobEnded,
    JobRejected,
    JobStarted,
    JobSubmitted,
    PodLaunched,
)
from shared.telemetry import meter

_m = meter()
# Seconds: the SDK's default buckets are for milliseconds (0, 5, 10, … 10000).
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FILES_SEEN = _m.create_counter(
    "slurmk8s.files.seen", description="Job files the watcher published (complete, new content)."
)
SUBMISSIONS = _m.create_counter("slurmk8s.submissions", description="Jobs sbatch accepted.")
REJECTIONS = _m.create_counter(
    "slurmk8s.rejections", description="Files refused, by the kind of their first problem."
)
PODS_LAUNCHED = _m.create_counter(
    "slurmk8s.pods.launched", description="Runs whose Pod the launcher created (or found)."
)
LAUNCH_LATENCY = _m.create_histogram(
    "slurmk8s.launch.latency",
    unit="s",
    description="The prolog's job.started to the Pod created.",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
)
CLEANUP_LATENCY = _m.create_histogram(
    "slurmk8s.cleanup.latency",
    unit="s",
    description="The epilog's job.ended to the run cleaned up.",
    explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
)

# The first matching pattern names a rejection's kind: a handful of values, never user text.
_REJECTION_KINDS = (
    ("too_large", re.compile(r"the limit is .*it was not read")),
    ("owner", re.compile(r"owned by|system accounts|root and system")),
    ("image", re.compile(r"#K8S_IMAGE|registry|image")),
    ("resources", re.compile(r"CPUs|memory|GPU|--mem|--gres|time limit|--time")),
    ("path", re.compile(r"outside the folders|folder|#K8S_SCRIPT|path")),
    ("option", re.compile(r"is not allowed")),
    ("syntax", re.compile(r"syntax|bash -n|unexpected")),
    ("sbatch", re.compile(r"sbatch")),
)


def rejection_kind(message: str) -> str:
    """A bounded label for a problem message (``other`` when none fits)."""
    for kind, pattern in _REJECTION_KINDS:
        if pattern.search(message):
            return kind
    return "other"


def observed(
    handler: Callable[[Envelope], Sequence[Envelope]],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Callable[[Envelope], Sequence[Envelope]]:
    """The handler, counting what it did (a redelivered message may count twice)."""

    def handle(envelope: Envelope) -> Sequence[Envelope]:
        follow_ups = handler(envelope)
        record(envelope, follow_ups, now())
        return follow_ups

    return handle


def record(envelope: Envelope, follow_ups: Iterable[Envelope], at: datetime) -> None:
    """Feed the instruments from one handled message and its follow-up events."""
    since = max(0.0, (at - envelope.occurred_at).total_seconds())
    for follow_up in follow_ups:
        body = follow_up.body
        if isinstance(body, JobSubmitted):
            SUBMISSIONS.add(1)
        elif isinstance(body, JobRejected):
            first = body.problems[0].message if body.problems else ""
            REJECTIONS.add(1, {"reason": rejection_kind(first)})
        elif isinstance(body, PodLaunched) and isinstance(envelope.body, JobStarted):
            PODS_LAUNCHED.add(1)
            LAUNCH_LATENCY.record(since)
    if isinstance(envelope.body, JobEnded):
        CLEANUP_LATENCY.record(since)


def count_file_seen(body: FileDetected) -> None:
    """The watcher published a file (called after the broker confirmed it)."""
    FILES_SEEN.add(1)


def watch_queue_depth(depth: Callable[[str], int | None], queues: Sequence[str]) -> None:
    """Report ``slurmk8s.queue.depth`` for ``queues`` at each collection.

    Args:
        depth: messages ready in a queue, or None when the broker cannot say.
        queues: the queue names (a service's work, retry and dead-letter queues).
    """

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        for name in queues:
            ready = depth(name)
            if ready is not None:
                yield Observation(ready, {"queue": name})

    _m.create_observable_gauge(
        "slurmk8s.queue.depth", callbacks=[observe], description="Messages ready in a queue."
    )


def broker_depth(settings: Any) -> Callable[[str], int | None]:
    """A ``depth`` function asking RabbitMQ (one short connection per collection)."""
    from shared.broker.connection import close_quietly, connect

    def depth(name: str) -> int | None:
        try:
            connection = connect(settings.model_copy(update={"connect_attempts": 1}))
        except Exception:  # no reading this time; the next collection tries again
            return None
        try:
            ok = connection.channel().queue_declare(name, passive=True)
            count: int = ok.method.message_count
            return count
        except Exception:
            return None
        finally:
            close_quietly(connection)

    return depth


def _prom_name(name: str, unit: str = "") -> str:
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    return f"{base}_seconds" if unit == "s" and not base.endswith("_seconds") else base


def _labels(attributes: Any, extra: dict[str, str] | None = None) -> str:
    items = {**{str(k): str(v) for k, v in (attributes or {}).items()}, **(extra or {})}
    if not items:
        return ""
    escaped = (
        f'{_prom_name(k)}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(items.items())
    )
    return "{" + ",".join(escaped) + "}"


def render_prometheus(data: MetricsData | None) -> str:
    """The readings in Prometheus' text exposition format (version 0.0.4)."""
    lines: list[str] = []
    for resource_metrics in data.resource_metrics if data else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                name = _prom_name(metric.name, metric.unit or "")
                points = metric.data
                if isinstance(points, Sum):
                    kind = "counter" if points.is_monotonic else "gauge"
                    shown = f"{name}_total" if points.is_monotonic else name
                    lines += [f"# HELP {shown} {metric.description}", f"# TYPE {shown} {kind}"]
                    lines += [
                        f"{shown}{_labels(p.attributes)} {p.value}" for p in points.data_points
                    ]
                elif isinstance(points, Gauge):
                    lines += [f"# HELP {name} {metric.description}", f"# TYPE {name} gauge"]
                    lines += [
                        f"{name}{_labels(p.attributes)} {p.value}" for p in points.data_points
                    ]
                elif isinstance(points, Histogram):
                    lines += [f"# HELP {name} {metric.description}", f"# TYPE {name} histogram"]
                    for p in points.data_points:
                        running = 0
                        bounds = [*p.explicit_bounds, math.inf]
                        for bound, count in zip(bounds, p.bucket_counts, strict=True):
                            running += count
                            le = "+Inf" if bound == math.inf else repr(float(bound))
                            lines.append(
                                f"{name}_bucket{_labels(p.attributes, {'le': le})} {running}"
                            )
                        lines.append(f"{name}_sum{_labels(p.attributes)} {p.sum}")
                        lines.append(f"{name}_count{_labels(p.attributes)} {p.count}")
    return "\n".join(lines) + "\n"


class PrometheusEndpoint:
    """``GET /metrics`` on ``host:port`` in a daemon thread, from an in-memory reader.

    Args:
        host: where to listen (``127.0.0.1`` unless a scraper elsewhere needs it).
        port: the TCP port (0 picks one; see ``port``).
    """

    def __init__(self, host: str, port: int) -> None:
        self.reader = InMemoryMetricReader()
        reader = self.reader

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = render_prometheus(reader.get_metrics_data()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the service's log

        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def observe_consumer(
    handler: Callable[[Envelope], Sequence[Envelope]], settings: Any, spec: Any
) -> Callable[[Envelope], Sequence[Envelope]]:
    """A consuming service's handler, observed, with the depth of its queues reported.

    Args:
        handler: the service's handler.
        settings: the service's ``BrokerSettings``.
        spec: its ``QueueSpec`` (work, retry and dead-letter queues are reported).
    """
    watch_queue_depth(broker_depth(settings), [spec.name, spec.retry_queue, spec.dead_queue])
    return observed(handler)
