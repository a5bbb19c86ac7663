"""The head node's view of users and the NAS, as the launcher needs it: groups, homes, folders.

Folders: each job's results folder (``results``) and the tools folder (``tools``).

The launcher runs where Slurm's users resolve (same passwd/group source as the nodes), so the
Pod gets the same supplementary groups the job would have had on the node.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from pathlib import Path

from services.launcher.results import ensure_results_dir
from services.launcher.tools import check_tools
from shared.errors import PermanentError


class HostUsers:
    """``HostPort`` over ``pwd``/``os.getgrouplist``.

    Args:
        nas_root: where the NAS is mounted; homes are looked for in ``<nas_root>/home/<user>``.
        tools_dir: the tools folder, relative to ``nas_root``.
    """

    def __init__(self, nas_root: Path, tools_dir: str) -> None:
        self._nas_root = nas_root
        self._tools_dir = tools_dir

    def groups(self, user: str, gid: int) -> tuple[int, ...]:
        """The user's groups, primary first.

        Raises:
            PermanentError: the user is unknown on this host (identities are out of sync).
        """
        try:
            return tuple(os.getgrouplist(user, gid))
        except (KeyError, OSError) as exc:
            raise PermanentError(f"user {user!r} is unknown on the launcher's host") from exc

    def home(self, user: str) -> str | None:
        """``<nas>/home/<user>`` or the passwd home when it lies on the NAS; None otherwise."""
        candidates = [self._nas_root / "home" / user]
        with contextlib.suppress(KeyError):
            candidates.append(Path(pwd.getpwnam(user).pw_dir))
        for path in candidates:
            if path.is_relative_to(self._nas_root) and path.is_dir():
                return str(path)
        return None

    def results_dir(self, job_id: int, uid: int, gid: int) -> str:
        """``<nas>/results/<job_id>``, made and owned by uid:gid (``ensure_results_dir``)."""
        return str(ensure_results_dir(self._nas_root, job_id, uid, gid))

    def tools_dir(self) -> str:
        """``<nas>/<tools_dir>``, checked on every run (``check_tools``: a few ``fstat`` calls)."""
        return check_tools(self._nas_root, self._tools_dir)
