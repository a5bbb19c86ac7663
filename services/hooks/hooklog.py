"""The hooks' log: JSON lines appended to a root-only file, never to stdout or stderr.

slurmd may capture a prolog's output (and a chatty prolog is a slow one), so nothing is
printed. Logging must never be the reason a hook fails: write errors are swallowed. The file
is bounded: past 16 MiB it is rotated to ``hooks.log.1`` … ``.3`` (``shared.logcap``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from shared.logcap import rotate_if_over


class HookLog:
    """Appends ``{"ts", "pid", "hook", "event", ...}`` lines to one file.

    Args:
        path: the log file (its directory is created mode 0700).
        hook: which hook is logging (``prolog``, ``epilog``, ``flush``).
    """

    def __init__(self, path: Path, hook: str) -> None:
        self._path = path
        self._hook = hook

    def write(self, event: str, **fields: Any) -> None:
        """Append one line; a full disk or missing permission is ignored."""
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "pid": os.getpid(),
            "hook": self._hook,
            "event": event,
            **fields,
        }
        line = (json.dumps(record, default=str) + "\n").encode()
        try:
            self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            rotate_if_over(self._path)
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, line)  # one write with O_APPEND: lines from concurrent hooks never mix
            finally:
                os.close(fd)
        except OSError:
            pass
