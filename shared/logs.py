"""Structured logging: one JSON object per line for services, readable lines for people.

The standard library's loggers (pika, tenacity, kubernetes, urllib3) end in one stdlib handler
whose formatter is structlog's renderer; structlog's own loggers render the same way and write
straight to that handler's stream under its lock, without a stdlib ``LogRecord`` and handler
chain (28 us a line where that path took 68), so a service's stderr holds nothing but whole
JSON objects. Every line carries the service name, and the trace and span ids of the span it
was written in; lines written while a job's message is handled also carry that job's id
(``job_context``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor, WrappedLogger

from shared.config import TelemetrySettings

# Chatty at INFO (every connection, every HTTP request, watchfiles' "3 changes detected" at
# each wake-up of the watcher); their warnings and errors are kept.
_QUIET_LIBRARIES = ("pika", "kubernetes", "urllib3", "watchfiles")


def add_trace_context(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Add ``trace_id`` and ``span_id`` (W3C hex) of the current span, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def _add_service(service: str) -> Processor:
    # A processor rather than a context variable: threads (the consumer's worker, the
    # watcher's loops) do not inherit the main thread's context variables.
    def add(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    return add


_handler: logging.StreamHandler[TextIO] = logging.StreamHandler(sys.stderr)
"""The handler ``configure_logging`` installed last: where structlog's lines go too."""


class _HandlerStream:
    """structlog's logger: each rendered line goes to the stdlib handler's stream.

    Whole, under the handler's lock, so it never interleaves with a library's line written by
    another thread; the handler is looked up at each line, so a logger cached under an earlier
    configuration writes where stdlib lines go now. ``name`` is the module that asked for the
    logger (the ``logger`` field).
    """

    def __init__(self, name: str = "", *_args: Any) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        handler = _handler
        handler.acquire()
        try:
            handler.stream.write(message + "\n")
            handler.flush()
        finally:
            handler.release()

    debug = info = warning = error = critical = exception = msg


def configure_logging(
    settings: TelemetrySettings, service: str, *, stream: TextIO | None = None
) -> None:
    """Route stdlib and structlog output through one renderer, tagged with the service name.

    Args:
        settings: level and format (``json`` or ``console``).
        service: the ``service`` field of every line.
        stream: where lines go (stderr unless a test passes its own).
    """
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared_processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_service(service),
        add_trace_context,
    ]
    global _handler
    handler = _handler = logging.StreamHandler(stream or sys.stderr)
    structlog.configure(
        processors=[*shared_processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_HandlerStream,
        cache_logger_on_first_use=True,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared_processors,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


@contextlib.contextmanager
def job_context(job_id: int | None) -> Iterator[None]:
    """Tag every line logged inside the block (in this context) with ``job_id``."""
    if job_id is None:
        yield
        return
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        yield


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger bound to a component name; its lines name the calling module (``logger``)."""
    module = str(sys._getframe(1).f_globals.get("__name__", ""))
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(module, component=name)
    return logger
