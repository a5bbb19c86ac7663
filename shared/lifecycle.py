"""Process lifecycle: SIGTERM/SIGINT become a stop event; a second signal exits at once.

Services poll the event between units of work, finish the one in flight, then close their
connections, so a Kubernetes rollout or ``docker stop`` never cuts a message in half.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


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
