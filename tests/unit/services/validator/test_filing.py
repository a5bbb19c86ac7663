import os
import stat
from pathlib import Path

import pytest

from services.validator.filing import (
    Journal,
    move_no_clobber,
    read_job_file,
    unique_destination,
    write_for_owner,
)
from shared.errors import TransientError

pytestmark = pytest.mark.unit

LIMIT = 1 << 20


def test_unique_names_skip_taken_names_and_their_companions(tmp_path: Path) -> None:
    assert unique_destination(tmp_path, "hello.sh") == tmp_path / "hello.sh"
    (tmp_path / "hello.sh").write_text("x")
    assert unique_destination(tmp_path, "hello.sh") == tmp_path / "hello.1.sh"
    (tmp_path / "hello.1.sh.error").write_text("x")  # the file itself was removed by its owner
    assert unique_destination(tmp_path, "hello.sh", (".error",)) == tmp_path / "hello.2.sh"
    assert unique_destination(tmp_path, "job") == tmp_path / "job"
    (tmp_path / "job").write_text("x")
    assert unique_destination(tmp_path, "job") == tmp_path / "job.1"
    (tmp_path / ".hidden").write_text("x")
    assert unique_destination(tmp_path, ".hidden") == tmp_path / ".hidden.1"


def test_move_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("old")
    with pytest.raises(FileExistsError):
        move_no_clobber(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "old"
    assert (tmp_path / "a").exists()


def test_move_finishes_after_a_crash_between_link_and_unlink(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    os.link(tmp_path / "a", tmp_path / "b")
    move_no_clobber(tmp_path / "a", tmp_path / "b")
    assert not (tmp_path / "a").exists()
    assert (tmp_path / "b").read_text() == "x"


def test_move_keeps_owner_and_moves_links_and_directories_themselves(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    os.chown(tmp_path / "f", 2001, 2001)
    move_no_clobber(tmp_path / "f", tmp_path / "g")
    assert (tmp_path / "g").stat().st_uid == 2001
    (tmp_path / "link").symlink_to("/etc/hostname")
    move_no_clobber(tmp_path / "link", tmp_path / "moved-link")
    assert (tmp_path / "moved-link").is_symlink()
    (tmp_path / "d").mkdir()
    move_no_clobber(tmp_path / "d", tmp_path / "e")
    assert (tmp_path / "e").is_dir()


def test_reading_tells_what_the_file_is(tmp_path: Path) -> None:
    plain = tmp_path / "plain.sh"
    plain.write_bytes(b"#!/bin/sh\n")
    read = read_job_file(plain, LIMIT)
    assert (read.kind, read.data, read.size) == ("file", b"#!/bin/sh\n", 10)
    os.link(plain, tmp_path / "other-name")
    assert read_job_file(plain, LIMIT).kind == "hardlink"
    (tmp_path / "link.sh").symlink_to(plain)
    assert read_job_file(tmp_path / "link.sh", LIMIT).kind == "symlink"
    os.mkfifo(tmp_path / "fifo")
    assert read_job_file(tmp_path / "fifo", LIMIT).kind == "fifo"  # and it did not block
    (tmp_path / "folder").mkdir()
    assert read_job_file(tmp_path / "folder", LIMIT).kind == "directory"
    with pytest.raises(FileNotFoundError):
        read_job_file(tmp_path / "missing", LIMIT)


def test_companions_belong_to_the_owner_and_are_readable(tmp_path: Path) -> None:
    target = tmp_path / "x.error"
    write_for_owner(target, "hello\n", uid=2001, gid=2001)
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (2001, 2001, 0o644)
    assert target.read_text() == "hello\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.error"]


def test_journal_merges_steps(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    assert journal.read("k") == {}
    journal.update("k", job_id=5)
    journal.update("k", destination="/x")
    assert journal.read("k") == {"job_id": 5, "destination": "/x"}


def test_prune_forgets_only_old_finished_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.update("done", event="{}")
    journal.update("pending", job_id=1)
    journal.update("fresh", event="{}")
    old = 1_000_000.0
    for key in ("done", "pending"):
        os.utime(tmp_path / f"{key}.json", (old, old))
    now = (tmp_path / "fresh.json").stat().st_mtime
    assert journal.prune(older_than_s=3600, now=now) == 1
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == ["fresh", "pending"]


def test_a_key_is_handled_by_one_holder_at_a_time(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    with journal.locked("k"):
        with pytest.raises(TransientError), Journal(tmp_path).locked("k"):
            pass
        with journal.locked("other"):
            pass
    with journal.locked("k"):
        pass
