"""A running job whose output cannot be written fails with a clear reason (issue 9, item 6).

The job's ``--output`` is on a second, tiny filesystem (an 8 MB ext4 image loop-mounted in
alice's NAS home, so the policy's writable roots allow it) that the job's own output fills;
its ``--error`` is on the lab's NAS. Filling the shared NAS instead would fail everyone's jobs
at once. The batch step (``services.runner``) must end the job with exit 74 and say
``reason=OutputLost`` in the error file. Once there is room again, the next job writing there
completes: nothing stays stuck. A big output that does fit arrives whole and once, however
far the runner is behind the container when it ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections import Counter
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
        # 20 MB of output into 8 MB: the container succeeds, its output cannot all be kept.
        body = "yes 0123456789abcdef | head -c 20000000\n"
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


@pytest.mark.parametrize("apart", [False, True], ids=["one-file", "error-file-apart"])
def test_a_big_output_written_faster_than_it_is_read_arrives_whole_and_once(
    jobs: Any, apart: bool
) -> None:
    """36 MB of short lines in a few seconds, from stdout and stderr at once: every line, once.

    The container is done long before the runner has read its log (it once gave up after
    30 s and the job COMPLETED with 14 of 40 MB). Apart, stdout and stderr are two streams,
    each in its order; in one file they interleave as the runtime wrote them.
    """
    out = HOME / f".big-{uuid.uuid4().hex[:8]}.txt"
    err = out.with_suffix(".err") if apart else out
    lines = 1_000_000
    body = (
        f"yes stdout-0123456789 | head -n {lines} &\n"
        f"yes stderr-0123456789 | head -n {lines} >&2\n"
        "wait\n"
    )
    try:
        job_id = jobs.submit(
            "alice", jobs.script(ALPINE, body, f"--output={out}", f"--error={err}")
        )
        assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
        seen = Counter(
            line
            for path in {out, err}
            for line in path.read_bytes().splitlines()
            if not line.startswith(b"[slurm-k8s]")
        )
        assert seen == {b"stdout-0123456789": lines, b"stderr-0123456789": lines}
        if apart:
            assert b"stdout-0123456789\n" * lines in out.read_bytes()
            assert b"stderr-0123456789\n" * lines in err.read_bytes()
    finally:
        out.unlink(missing_ok=True)
        err.unlink(missing_ok=True)
