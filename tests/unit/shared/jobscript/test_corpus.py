"""Every job file of the hostile corpus through ``check_script`` and its Lua twin (issue 9).

The pure pass: a file's bytes alone decide its verdict, so each case whose verdict does not
depend on links, owners or timing is checked here in milliseconds, with the reason its owner
would read. ``job_submit.lua`` (the sbatch door) must list the same problems for each of them.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from shared.jobscript.policy import REPO_PATH, load_policy
from shared.jobscript.validation import check_script, format_problem
from tests.corpus import Case, load

pytestmark = pytest.mark.unit

CASES = load()
PURE = [c for c in CASES if c.pure is not None]
POLICY = load_policy(REPO_PATH)
REPO = Path(__file__).parents[4]
LUA = shutil.which("lua5.1") or shutil.which("lua5.3")


def home(case: Case) -> str:
    return f"/mnt/test-k8s/home/{case.owner}"


def test_the_corpus_has_at_least_100_cases_each_with_an_expected_answer() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
    for case in CASES:
        assert case.nas is not None or case.sbatch is not None, case.id
        if case.nas is not None and case.nas.verdict == "failed":
            assert case.nas.reason, f"{case.id}: a refusal must name its reason"


@pytest.mark.parametrize("case", PURE, ids=lambda c: c.id)
def test_check_script_gives_each_file_its_verdict_and_reason(case: Case) -> None:
    expect = case.pure
    assert expect is not None
    verdict = check_script(case.content(), POLICY, user=case.owner, home=home(case))
    said = [format_problem(p) for p in verdict.problems]
    assert verdict.accepted == (expect.verdict == "accepted"), said
    assert any(expect.reason in line for line in said) or verdict.accepted, said


@pytest.mark.skipif(LUA is None, reason="no lua5.1/lua5.3 interpreter")
def test_job_submit_lua_says_what_python_says_for_every_file(tmp_path: Path) -> None:
    driver = REPO / "tests" / "unit" / "slurm" / "driver.lua"
    differ = []
    for case in PURE:
        data = case.content()
        job = tmp_path / "job.sh"
        job.write_bytes(data)
        args = (str(REPO_PATH), case.owner, home(case), str(job))
        done = subprocess.run(
            [str(LUA), str(driver), str(REPO / "slurm" / "job_submit.lua"), "check", *args],
            capture_output=True,
            check=True,
            timeout=60,
        )
        python = check_script(data, POLICY, user=case.owner, home=home(case)).problems
        expected = [f"{p.line}\t{p.message}" for p in python]
        got = done.stdout.decode("utf-8", errors="surrogateescape").splitlines()
        if got != expected:
            differ.append((case.id, got[:3], expected[:3]))
    assert differ == []
