from pathlib import Path

import pytest

from services.watcher.mounts import (
    Mount,
    filesystem_of,
    is_network_filesystem,
    mount_of,
    parse_mountinfo,
    should_poll,
)

pytestmark = pytest.mark.unit

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
60 27 0:50 / /mnt/test rw,relatime - tmpfs tmpfs rw
61 27 0:51 / /mnt/test-k8s rw,relatime shared:40 master:3 - nfs4 nas:/export/k8s rw,vers=4.2
62 61 0:52 / /mnt/test-k8s/local rw,relatime - ext4 /dev/vdb rw
63 27 0:53 / /srv/my\\040share rw - cifs //fs/share rw,vers=3.1.1
64 27 0:54 / /srv/ssh rw - fuse.sshfs alice@host:/ rw
65 27 0:55 / /srv/old rw - nfs nas:/old rw,vers=3
66 65 0:56 / /srv/old rw - ext4 /dev/vdc rw
this line is garbage
"""


def test_parse_reads_mount_point_type_and_source() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert Mount("/mnt/test-k8s", "nfs4", "nas:/export/k8s") in mounts
    assert Mount("/srv/my share", "cifs", "//fs/share") in mounts  # octal escapes decoded
    assert len(mounts) == 9


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/mnt/test-k8s/slurm-jobs/submit", "nfs4"),
        ("/mnt/test-k8s", "nfs4"),
        ("/mnt/test/submit", "tmpfs"),  # /mnt/test does not claim /mnt/test-k8s and back
        ("/mnt/test-k8s/local/submit", "ext4"),  # the longest mount point wins
        ("/srv/my share/submit", "cifs"),
        ("/srv/ssh/submit", "fuse.sshfs"),
        ("/srv/old/submit", "ext4"),  # stacked on the same point: the last one is visible
        ("/home/alice", "ext4"),
    ],
)
def test_mount_of_takes_the_longest_mount_point(path: str, fstype: str) -> None:
    mount = mount_of(path, parse_mountinfo(MOUNTINFO))
    assert mount is not None
    assert mount.fstype == fstype


@pytest.mark.parametrize(
    ("fstype", "network"),
    [
        ("nfs", True),
        ("nfs4", True),
        ("cifs", True),
        ("smb3", True),
        ("fuse.sshfs", True),
        ("fuse.rclone", True),
        ("ceph", True),
        ("ext4", False),
        ("xfs", False),
        ("tmpfs", False),
        ("overlay", False),
        ("fuseblk", False),
    ],
)
def test_network_filesystems(fstype: str, network: bool) -> None:
    assert is_network_filesystem(fstype) is network


@pytest.mark.parametrize(
    ("forced", "fstype", "poll"),
    [
        (None, "nfs4", True),
        (None, "ext4", False),
        (None, None, False),
        (True, "ext4", True),
        (False, "nfs4", False),
    ],
)
def test_should_poll_honours_the_override(
    forced: bool | None, fstype: str | None, poll: bool
) -> None:
    assert should_poll(forced, fstype) is poll


def test_filesystem_of_reads_a_mountinfo_file(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert filesystem_of(Path("/mnt/test-k8s/slurm-jobs/submit"), info) == "nfs4"
    assert filesystem_of(Path("/x"), tmp_path / "missing") is None
