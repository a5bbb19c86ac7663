"""The collector's file boundary: the job's output file, its summary, the run's handoff file.

The collector runs as root and the output directory belongs to the user, so every path is
treated as hostile: files are opened relative to their directory's descriptor with
``O_NOFOLLOW``, must be regular files owned by the job's uid, and are checked after opening
(``fstat``), never before. The summary is written under a fresh temporary name
(``O_EXCL|O_NOFOLLOW``), given to the user with ``fchown`` and renamed into place, so a
symlink planted at either name is never followed.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

from services.collector.handlers import FOOTER_MARK, HEADER_MARK, RunKey
from shared.errors import PermanentError
from shared.fileio import write_all
from shared.jobpods import handoff_path, refusal_path

SUMMARY_SUFFIX = ".summary.json"
_TAIL = 64 * 1024
_HEAD = 8 * 1024


class UnsafeFile(PermanentError):
    """A path is missing, not a regular file, or not owned by the job's user."""


def summary_path(output: Path) -> Path:
    """``<output>.summary.json``."""
    return output.with_name(output.name + SUMMARY_SUFFIX)


@contextlib.contextmanager
def _directory(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_owned(dir_fd: int, name: str, uid: int, flags: int) -> int:
    """Open ``name`` in ``dir_fd`` without following links; it must be uid's regular file."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError as exc:
        raise UnsafeFile(f"{name}: missing") from exc
    except OSError as exc:  # ELOOP: a symlink
        raise UnsafeFile(f"{name}: cannot open safely: {exc.strerror}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
        os.close(fd)
        raise UnsafeFile(f"{name}: not a regular file owned by uid {uid}")
    return fd


class NasFiles:
    """``FilesPort`` on the local view of the NAS.

    Args:
        state_dir: the services' state directory (holds the handoff files).
    """

    def __init__(self, state_dir: Path) -> None:
        self._state_dir = state_dir

    def has_runner_lines(self, output: Path, uid: int) -> bool:
        """The runner's header is in the first lines of uid's output file."""
        try:
            with _directory(output.parent) as dfd:
                fd = _open_owned(dfd, output.name, uid, os.O_RDONLY)
                try:
                    return HEADER_MARK.encode() in os.pread(fd, _HEAD, 0)
                finally:
                    os.close(fd)
        except (UnsafeFile, FileNotFoundError):
            return False

    def complete_output(self, output: Path, uid: int, footer: str) -> bool:
        """Append the footer if the runner's is missing from the file's tail.

        Raises:
            UnsafeFile: the output is missing, a link, or not the user's.
        """
        with _directory(output.parent) as dfd:
            fd = _open_owned(dfd, output.name, uid, os.O_RDWR | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                tail = os.pread(fd, _TAIL, max(0, size - _TAIL))
                if FOOTER_MARK.encode() in tail:
                    return False
                prefix = b"" if not tail or tail.endswith(b"\n") else b"\n"
                write_all(fd, prefix + footer.encode())
                return True
            finally:
                os.close(fd)

    def summary_exists(self, output: Path) -> bool:
        """Whether the summary is there (whatever it is)."""
        return os.path.lexists(summary_path(output))

    def write_summary(self, output: Path, uid: int, gid: int, content: bytes) -> None:
        """Write the summary next to uid's output file, owned by uid:gid, atomically.

        Unchanged content is left alone, so redeliveries do not even touch the file.

        Raises:
            UnsafeFile: the output file next to which it goes is not the user's.
        """
        target = summary_path(output).name
        with _directory(output.parent) as dfd:
            # The user's own output file in this directory is what entitles us to write here.
            os.close(_open_owned(dfd, output.name, uid, os.O_RDONLY))
            mode = os.stat(output.name, dir_fd=dfd, follow_symlinks=False).st_mode & 0o666
            with contextlib.suppress(UnsafeFile):
                fd = _open_owned(dfd, target, uid, os.O_RDONLY)
                try:
                    if os.read(fd, len(content) + 1) == content:
                        return
                finally:
                    os.close(fd)
            tmp = f".{target}.{uuid.uuid4().hex[:8]}.tmp"
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd
            )
            try:
                write_all(fd, content)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode or 0o644)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                os.unlink(tmp, dir_fd=dfd)
                raise
            os.close(fd)
            os.rename(tmp, target, src_dir_fd=dfd, dst_dir_fd=dfd)

    def run_answered(self, run: RunKey) -> bool:
        """The launcher left the run's handoff or refusal: its batch step has its answer."""
        return any(
            os.path.lexists(path(self._state_dir, run.job_id, run.restart_count))
            for path in (handoff_path, refusal_path)
        )

    def remove_handoff(self, run: RunKey) -> None:
        """Delete the run's handoff kubeconfig (its token dies with the Pod anyway) or refusal."""
        for path in (handoff_path, refusal_path):
            path(self._state_dir, run.job_id, run.restart_count).unlink(missing_ok=True)
