"""What the validator needs from Slurm, as a port its handler is written against.

The commands themselves (sbatch as the file's owner, the key lookups, the output path) and
the translation of their failures are ``shared.slurmctl``'s, the one Slurm boundary:
"the controller is not answering" is a ``TransientError`` (the message is retried with backoff
and the file waits), a refusal is ``SubmitRefused`` carrying sbatch's own words for the
``.error`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Slurm(Protocol):
    """What the validator needs from Slurm (``shared.slurmctl.Submitter``; a fake in tests)."""

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        """Submit as ``user``; return the job id."""
        ...

    def find_job(self, *, user: str, key: str, attempted: bool) -> int | None:
        """The id of ``user``'s job carrying this submission key, if any.

        ``attempted`` says whether an earlier sbatch with this key may have run; only then
        must accounting answer (a key that was never submitted cannot be there).
        """
        ...

    def stdout_path(self, job_id: int, *, user: str, name: str) -> str | None:
        """Where the job's output goes, patterns expanded, if Slurm still knows the job.

        ``user`` and ``name`` are the job's owner and name, for ``%u`` and ``%x``.
        """
        ...
