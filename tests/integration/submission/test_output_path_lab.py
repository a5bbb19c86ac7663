"""The validator's output path without a Slurm round trip is the one squeue gives (lab, 22.05).

``services.validator.handlers.squeue_output`` answers from the script alone for scripts without
``--chdir``, ``--array`` or a backslash in ``--output``; each case here is submitted (held, as
alice, the way the validator submits) and its answer compared with ``Submitter.stdout_path``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.validator.handlers import _job_name, squeue_output
from shared.jobscript import parse_script
from shared.slurmctl import Submitter
from tests.integration.conftest import lab_unavailable

pytestmark = pytest.mark.integration

ALICE = "alice"
# (directives after the shebang, or None when the script must be left to squeue)
CASES = {
    "default": "#SBATCH --hold\n",
    "relative-patterns": "#SBATCH --hold\n#SBATCH --output=out-%x-%j-%u.txt\n",
    "relative-subdir": "#SBATCH --hold\n#SBATCH --output sub/dir/%j.log\n",
    "short-option": "#SBATCH --hold -o o-%j.txt\n",
    "abbreviated": "#SBATCH --hold\n#SBATCH --out=abbr-%J.txt\n",
    "absolute": "#SBATCH --hold\n#SBATCH --output=/dev/null\n",
    "absolute-pattern": "#SBATCH --hold\n#SBATCH --output=/tmp/%u/%x-%j.out\n",
    "named": "#SBATCH --hold\n#SBATCH --job-name=my-name\n#SBATCH -o %x_%%_%j\n",
    "last-wins": "#SBATCH --hold\n#SBATCH -o first-%j\n#SBATCH --output=second-%j\n",
    "dot-segments": "#SBATCH --hold\n#SBATCH --output=./a/../b-%j.out\n",
}
LEFT_TO_SQUEUE = {
    "chdir": "#SBATCH --hold\n#SBATCH --chdir=/tmp\n#SBATCH --output=c-%j.out\n",
    "array": "#SBATCH --hold\n#SBATCH --array=1-2\n",
    "backslash": "#SBATCH --hold\n#SBATCH --output=b\\\\-%j.out\n",
}


@pytest.fixture
def submitter(slurm_ready: str, lab_env: dict[str, str]) -> Submitter:
    if os.geteuid() != 0:
        lab_unavailable("needs root (sbatch runs as alice)")
    return Submitter(
        timeout_s=60, query_timeout_s=30, lookback_days=7, slurm_conf=lab_env.get("SLURM_CONF")
    )


@pytest.fixture
def home(lab_env: dict[str, str]) -> Path:
    return Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s")) / "home" / ALICE


@pytest.fixture
def jobs() -> Iterator[list[int]]:
    ids: list[int] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, timeout=60)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_script_alone_gives_squeues_path(
    case: str, submitter: Submitter, home: Path, jobs: list[int]
) -> None:
    data = f"#!/bin/bash\n{CASES[case]}true\n".encode()
    parsed = parse_script(data.decode())
    path = f"/nas/slurm-jobs/submit/t-{uuid.uuid4().hex[:6]}.sh"
    name = _job_name(parsed, path)
    job_name = "" if "job-name" in CASES[case] else Path(path).name
    job_id = submitter.submit(data, user=ALICE, key=uuid.uuid4().hex, cwd=home, job_name=job_name)
    jobs.append(job_id)
    mine = squeue_output(parsed, job_id=job_id, user=ALICE, cwd=str(home), name=name)
    assert mine is not None
    assert mine == submitter.stdout_path(job_id, user=ALICE, name=name)


@pytest.mark.parametrize("case", sorted(LEFT_TO_SQUEUE))
def test_what_the_script_cannot_decide_is_asked(case: str, home: Path) -> None:
    parsed = parse_script(f"#!/bin/bash\n{LEFT_TO_SQUEUE[case]}true\n")
    assert squeue_output(parsed, job_id=1, user=ALICE, cwd=str(home), name="x") is None
