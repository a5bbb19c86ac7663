"""A running job whose output cannot be written fails with a clear reason (issue 9, item 6).

The job's ``--output`` is on a second, tiny filesystem (an 8 MB ext4 image loop-mounted in
alice's NAS home, so the policy's writable roots allow it) that the job's own output fills;
its ``--error`` is on the lab's NAS. Filling the shared NAS instead would fail everyone's jobs
at once. The batch step (``services.runner``) must end the job with exit 74 and say
``reason=OutputLost`` in the error file. Once there is room again, the next job writing there
completes: nothing stays stuck.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import lab_unavailable

pytestmark = pytest.mark.integration

ALPINE = "nas-hub.local:5407/alpine:latest"
HOME = Path("/mnt/test-k8s/home/alice")


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB filesystem of alice's inside her NAS home; unmounted and removed afterwards."""
    if os.geteuid() != 0:
        lab_unavailable("loop-mounting a filesystem needs root")
    image = tmp_path / "tiny.img"
    mount = HOME / f".full-{uuid.uuid4().hex[:8]}"
    subprocess.run(["truncate", "-s", "8M", str(image)], check=True, timeout=30)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, timeout=60)
    mount.mkdir()
    try:
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, timeout=60)
        shutil.chown(mount, "alice", "alice")
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False, timeout=60)
        mount.rmdir()


def test_output_that_does_not_fit_fails_the_job_and_the_next_one_runs_when_room_returns(
    jobs: Any, tiny: Path
) -> None:
    err = HOME / f"{tiny.name}.err"
    try:
        # 64 MB of output into 8 MB: the container succeeds, its output cannot all be kept.
        # (20 MB once arrived as less than 8 MB under CI's load and the job COMPLETED: see
        # the known defect below; this test is about the write failure.)
        body = "yes 0123456789abcdef | head -c 64000000\n"
        job_id = jobs.submit(
            "alice",
            jobs.script(ALPINE, body, f"--output={tiny}/out.txt", f"--error={err}"),
        )
        assert jobs.wait_done(job_id) == ["FAILED", "74:0"]
        said = err.read_text()
        assert "reason=OutputLost: the job's output could not be written" in said, said
        assert "No space left on device" in said
        assert "the container's own outcome: Succeeded exit=0" in said

        (tiny / "out.txt").unlink()  # room again
        again = jobs.submit(
            "alice",
            jobs.script(ALPINE, "echo back", f"--output={tiny}/again.txt", f"--error={err}"),
        )
        assert jobs.wait_done(again) == ["COMPLETED", "0:0"]
        assert "back\n" in (tiny / "again.txt").read_text()
    finally:
        err.unlink(missing_ok=True)


@pytest.mark.xfail(
    reason="known defect (2026-12-03): a fast 40 MB output arrived as 14-37 MB and the job "
    "COMPLETED, with the kubelet's log rotation at 10Mi and at 1Gi alike; the runner's follow "
    "of the log loses part of it. Run with --runxfail to see it.",
    strict=False,
)
def test_a_big_output_written_faster_than_it_is_read_arrives_whole(jobs: Any) -> None:
    """40 MB in about a second, where the runner reads for several: every byte in the file."""
    out = HOME / f".big-{uuid.uuid4().hex[:8]}.txt"
    size = 40_000_000
    try:
        job_id = jobs.submit(
            "alice",
            jobs.script(ALPINE, f"yes 0123456789abcdef | head -c {size}\n", f"--output={out}"),
        )
        assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
        assert out.stat().st_size == size
    finally:
        out.unlink(missing_ok=True)
