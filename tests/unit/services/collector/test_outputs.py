import os
from pathlib import Path

import pytest

from services.collector.handlers import RunKey
from services.collector.outputs import NasFiles, UnsafeFile, summary_path
from shared.jobpods import handoff_path

pytestmark = pytest.mark.unit

UID, GID = 2001, 2000
FOOTER = "[slurm-k8s] outcome: FAILED exit_code=137 reason=OOMKilled (collector)\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@pytest.fixture
def output(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    out = results / "42.out"
    out.write_text("[slurm-k8s] job 42 on node1 pod slurm-jobs/job-42-r0\nhello\n")
    os.chown(out, UID, GID)
    return out


@needs_root
def test_footer_is_appended_once(output: Path, tmp_path: Path) -> None:
    files = NasFiles(tmp_path)
    assert files.has_runner_lines(output, UID)
    assert files.complete_output(output, UID, FOOTER)
    assert not files.complete_output(output, UID, FOOTER)
    assert output.read_text().endswith("hello\n" + FOOTER)


@needs_root
def test_footer_goes_on_its_own_line(output: Path, tmp_path: Path) -> None:
    output.write_text("[slurm-k8s] header\npartial line")
    NasFiles(tmp_path).complete_output(output, UID, FOOTER)
    assert output.read_text().endswith("partial line\n" + FOOTER)


@needs_root
def test_runner_footer_means_complete(output: Path, tmp_path: Path) -> None:
    with output.open("a") as f:
        f.write("[slurm-k8s] outcome: COMPLETED exit_code=0\n")
    before = output.read_bytes()
    assert not NasFiles(tmp_path).complete_output(output, UID, FOOTER)
    assert output.read_bytes() == before


@needs_root
def test_symlinked_output_is_never_followed(output: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    os.chown(victim, UID, GID)  # even a file the user owns elsewhere is not reached via a link
    output.unlink()
    output.symlink_to(victim)
    os.lchown(output, UID, GID)
    files = NasFiles(tmp_path)
    with pytest.raises(UnsafeFile):
        files.complete_output(output, UID, FOOTER)
    with pytest.raises(UnsafeFile):
        files.write_summary(output, UID, GID, b"{}\n")
    assert victim.read_text() == "root's file\n"
    assert not files.has_runner_lines(output, UID)


@needs_root
def test_someone_elses_file_is_refused(output: Path, tmp_path: Path) -> None:
    os.chown(output, 2002, GID)
    with pytest.raises(UnsafeFile):
        NasFiles(tmp_path).complete_output(output, UID, FOOTER)


@needs_root
def test_summary_is_owned_by_the_user_and_rewritten_atomically(
    output: Path, tmp_path: Path
) -> None:
    files = NasFiles(tmp_path)
    files.write_summary(output, UID, GID, b'{"state": "COMPLETED"}\n')
    target = summary_path(output)
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (UID, GID)
    assert target.read_bytes() == b'{"state": "COMPLETED"}\n'
    inode = st.st_ino
    files.write_summary(output, UID, GID, b'{"state": "COMPLETED"}\n')
    assert target.stat().st_ino == inode, "same content: not rewritten"
    files.write_summary(output, UID, GID, b'{"state": "FAILED"}\n')
    assert target.read_bytes() == b'{"state": "FAILED"}\n'
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(".")] == []


@needs_root
def test_summary_replaces_a_planted_symlink_instead_of_following_it(
    output: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    summary_path(output).symlink_to(victim)
    NasFiles(tmp_path).write_summary(output, UID, GID, b"{}\n")
    assert victim.read_text() == "keep\n"
    assert not summary_path(output).is_symlink()


def test_handoff_file_is_removed_and_missing_is_fine(tmp_path: Path) -> None:
    run = RunKey(42, 0)
    path = handoff_path(tmp_path, 42, 0)
    path.parent.mkdir(parents=True)
    path.write_text("kubeconfig")
    files = NasFiles(tmp_path)
    files.remove_handoff(run)
    files.remove_handoff(run)
    assert not path.exists()
