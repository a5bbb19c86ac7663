import errno
import os
from pathlib import Path

import pytest

from shared.fileio import write_all

pytestmark = pytest.mark.unit


def test_a_short_write_is_completed_and_a_full_disk_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    takes = iter([7, 3, 3])  # bytes the filesystem takes per call; then it is full
    real_write = os.write

    def filling(fd: int, data: bytes) -> int:
        room = next(takes, 0)
        if not room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:room]))

    monkeypatch.setattr(os, "write", filling)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, b"0123456789")  # 7 + 3: whole, in two calls
        with pytest.raises(OSError, match="No space left"):
            write_all(fd, b"abcdefghij")  # 3 + nothing: the caller learns it is not whole
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"0123456789abc"
