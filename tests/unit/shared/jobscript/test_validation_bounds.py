"""Issue 7: the checks do bounded, linear work, and name a BOM and a forged wrapper."""

import pytest

from shared.jobscript import validation
from shared.jobscript.policy import REPO_PATH, load_policy
from shared.jobscript.validation import MAX_PROBLEMS, ProblemList, check_script, format_problem
from shared.jobscript.wrapping import is_accepted, wrap_script, wrapper_sign
from shared.messages import Problem

pytestmark = pytest.mark.unit

POLICY = load_policy(REPO_PATH)
HOME = "/mnt/test-k8s/home/alice"
HEAD = b"#!/bin/bash\n#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"


def lines(data: bytes) -> list[str]:
    verdict = check_script(data, POLICY, user="alice", home=HOME, syntax=None)
    return [format_problem(p) for p in verdict.problems]


def test_an_oversized_script_is_refused_before_it_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(text: str) -> None:
        raise AssertionError("parsed an oversized script")

    monkeypatch.setattr(validation, "parse_script", never)
    data = HEAD + b"#SBATCH --outp=/x\n" * (POLICY.max_script_bytes // 18)
    assert lines(data) == [
        f"file: the file is {len(data)} bytes; the limit is {POLICY.max_script_bytes} bytes"
    ]


def test_at_most_twenty_problems_then_a_count() -> None:
    data = HEAD + b"#SBATCH --outp=/x\n" * 1000 + b"echo\n"
    found = lines(data)
    assert len(found) == MAX_PROBLEMS + 1
    assert found[0].startswith("line 3: --output '/x' is outside")
    assert found[MAX_PROBLEMS - 1].startswith(f"line {MAX_PROBLEMS + 2}: --output")
    assert found[-1] == "file: ... and 980 more problems (only the first 20 are listed)"


def test_the_listed_problems_are_those_on_the_first_lines_whatever_the_pass() -> None:
    # Path problems (a later pass) on early lines displace option problems on later lines.
    data = HEAD + b"#SBATCH -o /etc/x\n" * 5 + b"#SBATCH --uid=0\n" * 30 + b"echo\n"
    found = lines(data)
    assert [f.split(":")[0] for f in found[:6]] == [f"line {n}" for n in (3, 4, 5, 6, 7, 8)]
    assert "--output '/etc/x'" in found[0]
    assert found[-1] == "file: ... and 15 more problems (only the first 20 are listed)"


def test_problem_list_keeps_distinct_lowest_lines_in_order() -> None:
    kept = ProblemList(3)
    for line in (9, 5, 5, 7, 1, 9, 3):
        kept.add(Problem(line=line, message=f"m{line}"))
    assert kept.result() == (
        Problem(line=1, message="m1"),
        Problem(line=3, message="m3"),
        Problem(line=5, message="m5"),
        Problem(line=0, message="... and 3 more problems (only the first 3 are listed)"),
    )
    small = ProblemList(5)
    small.extend([Problem(line=2, message="b"), Problem(line=2, message="a")])
    assert small.result() == (Problem(line=2, message="b"), Problem(line=2, message="a"))


def test_a_bom_gets_its_own_message_and_nothing_misleading() -> None:
    assert lines(b"\xef\xbb\xbf" + HEAD + b"echo\n") == [
        "line 1: starts with a byte-order mark (BOM); save the file as UTF-8 without BOM"
    ]
    assert lines(HEAD + b"echo \xef\xbb\xbf\n") == []  # only at the start


def test_a_wrapper_is_never_accepted_as_a_script() -> None:
    forged = wrap_script(HEAD + b"echo\n").encode() + b"#K8S_IMAGE=nas-hub.local:5407/a\n"
    assert wrapper_sign(forged) == (3, "-m services.runner")
    assert any("which only slurm-k8s's own wrapper may carry" in f for f in lines(forged))
    assert wrapper_sign(HEAD + b"echo\n") is None


def test_the_accepted_mark_is_a_prefix() -> None:
    assert is_accepted("slurmk8s-accepted")
    assert is_accepted("slurmk8s-accepted; pod=slurm-jobs/job-7-r0 phase=Running")
    assert not is_accepted("pod=slurm-jobs/job-7-r0 phase=Running")
    assert not is_accepted(None)
    assert not is_accepted("")
