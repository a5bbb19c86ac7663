import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from shared.config import TelemetrySettings
from shared.logs import configure_logging, get_logger, job_context

pytestmark = pytest.mark.unit


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Configure logging into a buffer; put the root logger and structlog back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging(TelemetrySettings(), "testsvc", stream=out)
    yield out
    structlog.reset_defaults()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_stdlib_library_lines_are_json_with_service_and_level(stream: io.StringIO) -> None:
    logging.getLogger("pika.adapters").warning("connection %s reset", "c1")
    logging.getLogger("tenacity").error("giving up", exc_info=ValueError("boom"))
    warning, error = _lines(stream)
    assert warning["event"] == "connection c1 reset"
    assert warning["level"] == "warning"
    assert warning["service"] == "testsvc"
    assert warning["logger"] == "pika.adapters"
    assert "ValueError: boom" in str(error["exception"])


def test_library_chatter_below_warning_is_dropped(stream: io.StringIO) -> None:
    logging.getLogger("urllib3.connectionpool").info("GET /api 200")
    logging.getLogger("kubernetes.client").debug("body")
    logging.getLogger("watchfiles.main").info("3 changes detected")
    assert stream.getvalue() == ""


def test_lines_carry_trace_and_job_ids_where_there_are_some(stream: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span, job_context(42):
        get_logger("component").info("handled", queue="q")
        logging.getLogger("pika").warning("inside")
    get_logger("component").info("outside")
    handled, inside, outside = _lines(stream)
    trace_id = format(span.get_span_context().trace_id, "032x")
    for line in (handled, inside):
        assert line["trace_id"] == trace_id
        assert line["job_id"] == 42
    assert handled["component"] == "component"
    assert "trace_id" not in outside
    assert "job_id" not in outside


def test_lines_from_many_threads_and_both_kinds_of_logger_stay_whole(
    stream: io.StringIO,
) -> None:
    def write(n: int) -> None:
        ours, library = get_logger("component"), logging.getLogger("pika.channel")
        for i in range(200):
            ours.info("handled", n=n, i=i, padding="x" * 500)
            library.warning("reset %s", "y" * 500)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = _lines(stream)  # every line parses: none was cut by another
    assert len(lines) == 4 * 200 * 2
    assert {line["logger"] for line in lines} == {__name__, "pika.channel"}


def test_a_logger_used_before_a_new_configuration_writes_where_lines_go_now(
    stream: io.StringIO,
) -> None:
    log = get_logger("component")
    log.info("first")
    later = io.StringIO()
    configure_logging(TelemetrySettings(), "testsvc", stream=later)
    log.info("second")
    assert [line["event"] for line in _lines(stream)] == ["first"]
    assert [line["event"] for line in _lines(later)] == ["second"]
