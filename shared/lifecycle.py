"""Process lifecycle: SIGTERM/SIGINT become a stop event; a second signal exits at once.

Services poll the event between units of work, finish the one in flight, then close their
connections, so a Kubernetes rollout or ``docker stop`` never cuts a message in half.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from shared.config import TelemetrySettings
from shared.logs import configure_logging
from shared.telemetry import configure_telemetry


def install_stop_event() -> threading.Event:
    """Map SIGTERM and SIGINT to a ``threading.Event``; the second signal raises SystemExit."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            sys.exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return stop


def start_service(name: str) -> threading.Event:
    """What every service does first: logs and telemetry from the settings, then the stop event.

    Args:
        name: the service's name in logs (``service=``) and traces (``service.name``).
    """
    telemetry = TelemetrySettings()
    configure_logging(telemetry, name)
    configure_telemetry(telemetry, name)
    return install_stop_event()
