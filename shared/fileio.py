"""Writing a buffer whole to a file descriptor, and reading a service's JSON record back.

``os.write`` may write fewer bytes than asked without an error: a filesystem that fills up
mid-write (a full NAS) takes what fits and refuses only the next write. A caller that ignores
the count renames a half-written file into place as if it were whole (a summary, a handoff
kubeconfig) or appends half a line. :func:`write_all` writes the rest, or raises the error
(``ENOSPC``) that the next write gets, so the caller's cleanup and retry run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shared.errors import TransientError


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``.

    Raises:
        OSError: the file refused the rest (e.g. ENOSPC); part of ``data`` may be written.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def read_record(path: Path, what: str) -> dict[str, Any]:
    """A service's own JSON record (a journal entry, a receipt record); {} when there is none.

    Raises:
        TransientError: the record exists but cannot be read or parsed (named by ``what``).
    """
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise TransientError(f"cannot read {what}: {exc}") from exc
    return loaded if isinstance(loaded, dict) else {}
