"""OpenTelemetry wiring: one tracer provider per process and W3C context in AMQP headers.

A job is one trace from the file landing on the NAS to its Pod's end: each publisher injects
``traceparent`` into the message headers and each consumer continues from it; through Slurm
the context rides in the job's comment (``shared.jobtrace``). Exporters are chosen by
settings: ``otlp`` (when the OTLP exporter package is installed), ``log`` (one JSON line per
finished span in the service's log, the default), ``file`` (JSON lines appended to
``OTEL_TRACES_FILE``, what the lab's trace test reads), ``console`` or ``none``.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.config import TelemetrySettings
from shared.errors import ConfigError
from shared.logs import get_logger

_PROPAGATOR = TraceContextTextMapPropagator()
INSTRUMENTATION = "slurm-k8s"


def configure_telemetry(
    settings: TelemetrySettings, service: str, *, exporter: SpanExporter | None = None
) -> None:
    """Install the process-wide tracer and meter providers.

    Args:
        settings: which exporter to use.
        service: the ``service.name`` resource attribute.
        exporter: an explicit span exporter (tests pass an in-memory one).
    """
    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    if exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    else:
        processor = _span_processor(settings)
        if processor is not None:
            tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    readers: list[Any] = []
    if settings.otel_traces_exporter == "console":
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    if settings.otel_traces_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPMetricExporter,
        )

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if settings.metrics_port is not None:
        from shared.metrics import PrometheusEndpoint  # its instruments import this module

        readers.append(PrometheusEndpoint(settings.metrics_host, settings.metrics_port).reader)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


def _span_processor(settings: TelemetrySettings) -> Any:
    """The processor for the configured exporter (None for ``none``).

    Raises:
        ConfigError: an unknown exporter, ``otlp`` without its package, ``file`` without a path.
    """
    kind = settings.otel_traces_exporter
    if kind == "none":
        return None
    if kind == "log":
        return SimpleSpanProcessor(LogSpanExporter())
    if kind == "file":
        if settings.otel_traces_file is None:
            raise ConfigError("OTEL_TRACES_EXPORTER=file needs OTEL_TRACES_FILE")
        # Synchronous: each span is on disk when it ends, whatever way the process ends.
        return SimpleSpanProcessor(JsonLinesSpanExporter(settings.otel_traces_file))
    if kind == "console":
        return BatchSpanProcessor(ConsoleSpanExporter())
    if kind == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise ConfigError(
                "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http"
            ) from exc
        # Endpoint, headers and timeout come from the standard OTEL_EXPORTER_OTLP_* variables.
        return BatchSpanProcessor(OTLPSpanExporter())
    raise ConfigError(f"OTEL_TRACES_EXPORTER={kind!r}: use none, log, file, console or otlp")


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as one flat JSON-able object (ids in W3C hex, times in ns since epoch)."""
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "service": span.resource.attributes.get("service.name"),
        "trace_id": format(context.trace_id, "032x") if context else None,
        "span_id": format(context.span_id, "016x") if context else None,
        "parent_span_id": format(parent.span_id, "016x") if parent else None,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


class LogSpanExporter(SpanExporter):
    """Each finished span becomes one ``span.ended`` line in the service's JSON log."""

    def __init__(self) -> None:
        # One logger for the exporter's life: structlog caches a logger per proxy, and a
        # proxy per export cost 10 of a span line's 75 us.
        self._log = get_logger("telemetry")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Log the spans."""
        log = self._log
        for span in spans:
            record = span_record(span)
            # Given explicitly, the line's trace_id/span_id are the span's, not those of the
            # context the span ended in.
            log.info("span.ended", **{("span" if k == "name" else k): v for k, v in record.items()})
        return SpanExportResult.SUCCESS


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to a file shared by every service.

    Each line is one ``write`` on an ``O_APPEND`` descriptor, so lines from several processes
    never interleave.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Append the spans."""
        data = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans).encode()
        with self._lock:
            try:
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError:
                return SpanExportResult.FAILURE
            try:
                os.write(fd, data)
            except OSError:
                return SpanExportResult.FAILURE
            finally:
                os.close(fd)
        return SpanExportResult.SUCCESS


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span (None outside any span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@functools.cache
def tracer() -> trace.Tracer:
    """The project's tracer (a no-op until ``configure_telemetry`` runs).

    Made once: ``get_tracer`` builds a new tracer each call (11 us, a third of a span's cost),
    and the one made before ``configure_telemetry`` follows the provider it sets.
    """
    return trace.get_tracer(INSTRUMENTATION)


def meter() -> metrics.Meter:
    """The project's meter (a no-op until ``configure_telemetry`` runs)."""
    return metrics.get_meter(INSTRUMENTATION)


def inject_context(headers: MutableMapping[str, Any]) -> None:
    """Write the current trace context into AMQP headers."""
    _PROPAGATOR.inject(headers)


def extract_context(headers: Mapping[str, Any] | None) -> Context:
    """Read a trace context from AMQP headers (an empty context when there is none)."""
    carrier = {k: v for k, v in (headers or {}).items() if isinstance(v, str)}
    return _PROPAGATOR.extract(carrier)
