"""The tools folder on the NAS (a static bash and busybox): checked before any Pod uses it.

Every job's container runs its script with ``<NAS>/<tools_dir>/bash``, mounted read-only from
the NAS volume at ``/slurm-k8s-tools`` (``podspec``). Whoever could replace those files would
run code as every job's user, so the launcher uses the folder only if no one but root (the
launcher's user) can change it: every folder from the NAS root down to it, and both files,
must belong to the launcher's uid and be writable by no group or other user, and nothing on
the way may be a symlink (the walk opens each step with ``O_NOFOLLOW``). The files are
installed by the site's installer (``lab/nas/up.sh`` in the lab: Debian's bash-static and
busybox-static). This replaces an init container that copied them from a tools image into
each Pod: that container's exit cost the kubelet about a second per Pod (its status loop
notices an exited container at its next relist) before the job's container could start.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from shared.errors import PermanentError

TOOLS = ("bash", "busybox")
"""What the Pod's run shim needs (``podspec.RUN_SHIM``)."""


class ToolsUnusable(PermanentError):
    """The tools folder is missing, or someone other than root could change it."""


def _check(fd: int, shown: Path, *, directory: bool) -> None:
    st = os.fstat(fd)
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        raise ToolsUnusable(f"{shown} is not a {'folder' if directory else 'regular file'}")
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ToolsUnusable(
            f"{shown} can be changed by someone other than the launcher's user "
            f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
        )
    if not directory and not st.st_mode & stat.S_IXOTH:
        raise ToolsUnusable(f"{shown} is not executable by the jobs' users")


def check_tools(nas_root: Path, tools_dir: str) -> str:
    """Check ``<nas_root>/<tools_dir>`` (a relative path) and its files; return ``tools_dir``.

    Raises:
        ToolsUnusable: the folder or a file is missing, a symlink, or writable by others.
    """
    relative = PurePosixPath(tools_dir)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ToolsUnusable(f"the tools folder {tools_dir!r} is not a path inside the NAS")
    shown = nas_root
    try:
        fd = os.open(nas_root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ToolsUnusable(f"the NAS root {nas_root} cannot be opened: {exc.strerror}") from exc
    try:
        _check(fd, shown, directory=True)
        for part in relative.parts:
            shown = shown / part
            try:
                step = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise ToolsUnusable(
                    f"the tools folder {shown} cannot be opened safely: {exc.strerror}"
                ) from exc
            os.close(fd)
            fd = step
            _check(fd, shown, directory=True)
        for name in TOOLS:
            try:
                tool = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
            except OSError as exc:
                raise ToolsUnusable(
                    f"{shown / name} cannot be opened safely: {exc.strerror}"
                ) from exc
            try:
                _check(tool, shown / name, directory=False)
            finally:
                os.close(tool)
    finally:
        os.close(fd)
    return str(relative)
