"""Writing a buffer whole to a file descriptor, the one way the services do it.

``os.write`` may write fewer bytes than asked without an error: a filesystem that fills up
mid-write (a full NAS) takes what fits and refuses only the next write. A caller that ignores
the count renames a half-written file into place as if it were whole (a summary, a handoff
kubeconfig) or appends half a line. :func:`write_all` writes the rest, or raises the error
(``ENOSPC``) that the next write gets, so the caller's cleanup and retry run.
"""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``.

    Raises:
        OSError: the file refused the rest (e.g. ENOSPC); part of ``data`` may be written.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
