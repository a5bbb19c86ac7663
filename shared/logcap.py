"""Size-bounded log files: rotate ``x.log`` to ``x.log.1`` … ``x.log.N`` past a size.

Two users: the hooks' log (:class:`services.hooks.hooklog.HookLog` rotates before appending)
and the lab's supervised services, whose output is piped through ``python -m shared.logcap
FILE`` (``lab/services.sh``). A log then holds at most ``max_bytes * (keep + 1)`` plus one
line. Standard library only: the prolog imports it on every job start.

Rotation is a rename, so a writer that already holds the old file open finishes its line
there; concurrent rotators (two hooks at once) at worst rotate twice, never lose a line.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

MAX_BYTES = 16 * 1024 * 1024
KEEP = 3


def rotate_if_over(path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> bool:
    """Shift ``path`` to ``path.1`` (and ``.1`` to ``.2`` …, dropping ``.keep``) when too big.

    Returns:
        Whether it rotated. A missing file, or one that cannot be looked at, is left alone.
    """
    try:
        if os.stat(path).st_size < max_bytes:
            return False
    except OSError:
        return False
    with contextlib.suppress(OSError):
        for n in range(keep - 1, 0, -1):
            older = Path(f"{path}.{n}")
            if older.exists():
                os.replace(older, f"{path}.{n + 1}")
        os.replace(path, f"{path}.1")
    return True


def main(argv: list[str]) -> int:
    """``python -m shared.logcap FILE [MAX_BYTES [KEEP]]``: append stdin to FILE, bounded."""
    if not argv:
        print("usage: python -m shared.logcap FILE [MAX_BYTES [KEEP]]", file=sys.stderr)
        return 2
    path = Path(argv[0])
    max_bytes = int(argv[1]) if len(argv) > 1 else MAX_BYTES
    keep = int(argv[2]) if len(argv) > 2 else KEEP
    out = open(path, "ab")  # noqa: SIM115 - reopened after each rotation
    try:
        for line in sys.stdin.buffer:
            out.write(line)
            out.flush()
            if out.tell() >= max_bytes and rotate_if_over(path, max_bytes, keep):
                out.close()
                out = open(path, "ab")  # noqa: SIM115
    finally:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
