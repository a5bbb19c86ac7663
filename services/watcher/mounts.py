"""Which filesystem holds the submit folder, read from ``/proc/self/mountinfo``.

inotify works at the local VFS layer: it sees writes made through this machine's mount, never
writes made by another NFS or SMB client. So a submit folder on a network filesystem has to be
polled. Parsing is pure (tested on sample text); only :func:`filesystem_of` reads ``/proc``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

# Filesystems whose files can change without this kernel knowing. Any other FUSE filesystem
# is treated the same way (see is_network_filesystem): most FUSE mounts on a NAS are remote.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "afs",
        "beegfs",
        "davfs",
    }
)
# FUSE types that are local disks, where inotify does see every write.
LOCAL_FUSE = frozenset({"fuseblk", "fuse.fuse-overlayfs", "fuse.lxcfs"})


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: where it is mounted, the filesystem type and its source."""

    mount_point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes (\040...).
    out: list[str] = []
    i = 0
    while i < len(field):
        chunk = field[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and chunk[1:].isdigit():
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (proc(5)); malformed lines are skipped.

    A line is ``id parent major:minor root mount_point options [optional...] - fstype source
    super_options``; the optional fields vary in number, so the ``-`` separator is searched.
    """
    mounts: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 3:
            continue
        mounts.append(Mount(_unescape(fields[4]), fields[sep + 1], _unescape(fields[sep + 2])))
    return mounts


def _contains(mount_point: str, path: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    # Component-wise: /mnt/test must not claim /mnt/test-k8s.
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that holds an absolute, symlink-free ``path``: the longest matching mount point.

    Of mounts stacked on the same point, the last listed is the visible one.
    """
    best: Mount | None = None
    for mount in mounts:
        if _contains(mount.mount_point, path) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def is_network_filesystem(fstype: str) -> bool:
    """Whether files on this filesystem type can change behind inotify's back."""
    if fstype in NETWORK_FILESYSTEMS:
        return True
    return fstype.startswith("fuse") and fstype not in LOCAL_FUSE


def should_poll(forced: bool | None, fstype: str | None) -> bool:
    """Poll when forced to, or (mode auto) when the folder is on a network filesystem."""
    if forced is not None:
        return forced
    return fstype is not None and is_network_filesystem(fstype)


def filesystem_of(path: Path, mountinfo: Path = MOUNTINFO) -> str | None:
    """The filesystem type holding ``path`` (after resolving symlinks), or None if unknown."""
    try:
        text = mountinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    mount = mount_of(os.path.realpath(path), parse_mountinfo(text))
    return mount.fstype if mount else None
