"""``<NAS>/results/<jobid>/``: made by the launcher, owned by the job's user, before the Pod.

``results/`` is world-writable with the sticky bit (every user's ``%j.out`` lands there), so
any user can create ``results/<jobid>`` before the job starts: a symlink to somewhere the
launcher (root) should never write, or a directory of their own where the job's results would
be read by them. Nothing here follows a symlink: ``results/`` itself is opened with
``O_NOFOLLOW|O_DIRECTORY``, the entry is made with ``mkdirat`` and checked with ``fstatat``
without following, and only a directory root has just made is opened (``O_NOFOLLOW``) and
given to the user with ``fchown``/``fchmod``. An existing entry is kept only if it is a real
directory owned by the job's uid (the user's own, or an earlier run of this job); anything
else is renamed aside (``.slurm-k8s-moved.<jobid>.<hex>``, where its owner finds it) and a
fresh directory is made. Refusing instead would let anyone block everyone's future job ids.
The sticky bit then keeps other users from renaming or removing the new directory.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from shared.errors import PermanentError, TransientError
from shared.logs import get_logger

_log = get_logger(__name__)

RESULTS_MODE = 0o750
"""The job's results folder: its owner (and the owner's group) only."""
ATTEMPTS = 3


def moved_aside_name(job_id: int) -> str:
    """Where a foreign ``results/<jobid>`` is moved (same folder, a hidden name)."""
    return f".slurm-k8s-moved.{job_id}.{secrets.token_hex(4)}"


def ensure_results_dir(nas_root: Path, job_id: int, uid: int, gid: int) -> Path:
    """Make ``<nas_root>/results/<job_id>`` a directory owned by uid:gid (idempotent).

    Raises:
        PermanentError: ``results/`` is missing, not a directory, a symlink, or not owned by
            this process's user (the NAS is set up wrong; the job gets no Pod).
        TransientError: someone keeps re-creating the entry between our steps.
    """
    parent = nas_root / "results"
    try:
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise PermanentError(
            f"the NAS results folder {parent} cannot be opened as a directory: {exc.strerror}"
        ) from exc
    try:
        owner = os.fstat(dir_fd).st_uid
        if owner != os.geteuid():
            raise PermanentError(
                f"the NAS results folder {parent} belongs to uid {owner}, not to the launcher "
                f"(uid {os.geteuid()}); its entries cannot be protected"
            )
        name = str(job_id)
        for _ in range(ATTEMPTS):
            try:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
            except FileExistsError:
                if _keep_existing(dir_fd, name, uid):
                    return parent / name
                aside = moved_aside_name(job_id)
                try:
                    os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # gone meanwhile: try to make it again
                _log.warning(
                    "results folder taken by someone else: moved aside",
                    job_id=job_id,
                    moved_to=str(parent / aside),
                )
                continue
            _give(dir_fd, name, uid, gid)
            return parent / name
        raise TransientError(f"{parent / name} keeps being re-created by someone else")
    finally:
        os.close(dir_fd)


def _keep_existing(dir_fd: int, name: str, uid: int) -> bool:
    """A real directory of the job's own user is kept; anything else is not."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid


def _give(dir_fd: int, name: str, uid: int, gid: int) -> None:
    """Hand the directory root just made to the user (never through a symlink)."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            raise TransientError(f"results/{name} was replaced while it was being made")
        os.fchown(fd, uid, gid)
        os.fchmod(fd, RESULTS_MODE)
    finally:
        os.close(fd)
