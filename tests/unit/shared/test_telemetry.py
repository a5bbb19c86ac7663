import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from shared.config import TelemetrySettings
from shared.errors import ConfigError
from shared.telemetry import JsonLinesSpanExporter, _span_processor, current_traceparent

pytestmark = pytest.mark.unit


def test_spans_are_appended_as_json_lines_with_their_parent(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("outer") as outer,
        tracer.start_as_current_span("inner", attributes={"slurmk8s.key": "k"}),
    ):
        traceparent = current_traceparent()
    inner, outer_line = (json.loads(line) for line in path.read_text().splitlines())
    trace_id = format(outer.get_span_context().trace_id, "032x")
    assert inner["name"] == "inner"
    assert inner["trace_id"] == outer_line["trace_id"] == trace_id
    assert inner["parent_span_id"] == outer_line["span_id"]
    assert outer_line["parent_span_id"] is None
    assert inner["attributes"] == {"slurmk8s.key": "k"}
    assert traceparent is not None
    assert traceparent.startswith(f"00-{trace_id}-{inner['span_id']}-")


def test_no_span_no_traceparent() -> None:
    assert current_traceparent() is None


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"OTEL_TRACES_EXPORTER": "file"}, "OTEL_TRACES_FILE"),
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "use none, log, file"),
    ],
)
def test_misconfigured_exporters_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=error):
        _span_processor(TelemetrySettings())


def test_the_default_exporter_logs_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert TelemetrySettings().otel_traces_exporter == "log"
