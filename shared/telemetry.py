"""OpenTelemetry wiring: one tracer provider per process and W3C context in AMQP headers.

A job is one trace from the file landing on the NAS to its Pod's end: each publisher injects
``traceparent`` into the message headers and each consumer continues from it. Metrics use the
same provider pattern; exporters are chosen by settings so tests can read spans in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.config import TelemetrySettings

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
    if exporter is None and settings.otel_traces_exporter == "console":
        exporter = ConsoleSpanExporter()
    if exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    readers = []
    if settings.otel_traces_exporter == "console":
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


def tracer() -> trace.Tracer:
    """The project's tracer (a no-op until ``configure_telemetry`` runs)."""
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
