"""Our directive parser against the real sbatch 22.05 on the lab: the same words, the same stops.

Each case is a plain Slurm job (no ``#K8S_`` line, so job_submit.lua lets it through), submitted
held (``-H``) as alice. The job name Slurm recorded is compared with the ``--job-name`` our
parser read. When sbatch refuses the script, our parser must report a problem too. Every job is
cancelled at once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shared.jobscript.parsing import parse_script

pytestmark = pytest.mark.integration

CASES = [
    "#SBATCH --job-name='a b'",
    '#SBATCH --job-name="a b"',
    '#SBATCH --job-name="a#b"',
    "#SBATCH --job-name=ab#c",
    '#SBATCH --job-name="a\\"b"',
    "#SBATCH --job-name='it''s'",
    "#SBATCH --job-name=x'y z'w",
    "#SBATCH --job-name=a\\#b",
    "#SBATCH --job-name=a\\ b",
    '#SBATCH --job-name="a\\ b"',
    "#SBATCH --job-name=a\\",
    "#SBATCH -J a\\  -c 1",
    "#SBATCH -Jshort",
    "#SBATCH --job-n=prefix",
    "#SBATCH--job-name=nospace",
    "#SLURM --job-name=legacy",
    "  #SBATCH --job-name=indented",
    "#SBATCH --job-name=first\n#SBATCH --job-name=second",
    "#SBATCH --job-name=one\necho stop\n#SBATCH --job-name=two",
    '#SBATCH --job-name="unclosed',
    "#SBATCH --jo=unique-prefix",
    "#SBATCH --mem-per=1G",
    "#SBATCH --ti=10",
    "#SBATCH --job-name=x stray",
]


def sbatch_name(nas_home: Path, script: str) -> str | None:
    """The job name sbatch records for a held job, or None if sbatch refused the script."""
    done = subprocess.run(
        ["runuser", "-u", "alice", "--", "sbatch", "--parsable", "-H"],
        input=script.encode(),
        cwd=nas_home,
        capture_output=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        return None
    job = done.stdout.decode().strip().split(";")[0]
    try:
        return subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%j"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.rstrip("\n")
    finally:
        subprocess.run(["scancel", job], check=False, timeout=60)


@pytest.mark.parametrize("directives", CASES)
def test_parser_reads_what_sbatch_reads(
    directives: str, slurm_ready: str, lab_env: dict[str, str]
) -> None:
    script = f"#!/bin/sh\n{directives}\necho done\n"
    home = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s")) / "home" / "alice"
    recorded = sbatch_name(home, script)
    parsed = parse_script(script)
    if recorded is None:
        assert parsed.problems, "sbatch refused this script; the parser must not accept it"
        return
    assert not parsed.problems, [p.message for p in parsed.problems]
    option = parsed.last("job-name")
    # Without --job-name, a script read from stdin is named "sbatch".
    assert (option.value if option else "sbatch") == recorded


@pytest.mark.parametrize(
    ("directive", "name"), [("#PBS -N pbsname", "pbsname"), ("#BSUB -J bsubname", "bsubname")]
)
def test_sbatch_translates_foreign_directives_which_is_why_we_refuse_them(
    directive: str, name: str, slurm_ready: str, lab_env: dict[str, str]
) -> None:
    script = f"#!/bin/sh\n{directive}\necho done\n"
    home = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s")) / "home" / "alice"
    assert sbatch_name(home, script) == name
    assert [p.line for p in parse_script(script).problems] == [2]
