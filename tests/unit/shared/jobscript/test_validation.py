import json
from pathlib import Path
from typing import Any

import pytest

from shared.jobscript.policy import REPO_PATH, load_policy
from shared.jobscript.validation import canonical, check_script, format_problem, is_under
from shared.messages import Problem

pytestmark = pytest.mark.unit

CASES = json.loads((Path(__file__).parents[3] / "data" / "submission_cases.json").read_text())
POLICY = load_policy(REPO_PATH)
HOME = "/mnt/test-k8s/home/alice"


def script_of(case: dict[str, Any]) -> bytes:
    text = case["script"] + ("# " + "x" * 97 + "\n") * case.get("pad_lines", 0)
    return text.encode("utf-8")


def verdict_lines(data: bytes) -> list[str]:
    verdict = check_script(data, POLICY, user="alice", home=HOME)
    return [format_problem(p) for p in verdict.problems]


@pytest.mark.parametrize("case", CASES["bad"], ids=lambda c: c["name"])
def test_bad_case_is_rejected_with_its_reason(case: dict[str, Any]) -> None:
    verdict = check_script(script_of(case), POLICY, user="alice", home=HOME)
    assert not verdict.accepted
    found = [(p.line, p.message) for p in verdict.problems]
    for line, text in case["expect"]:
        assert any(got_line == line and text in msg for got_line, msg in found), found


@pytest.mark.parametrize("case", CASES["good"], ids=lambda c: c["name"])
def test_good_case_is_accepted(case: dict[str, Any]) -> None:
    assert verdict_lines(script_of(case)) == []


def test_all_problems_at_once_in_line_order() -> None:
    data = (
        b"#!/bin/bash\n#SBATCH --uid=0 -c 64\n#SBATCH --output=/etc/x\n"
        b"#K8S_IMAGE=docker.io/x\n#K8S_FOO=1\necho\n"
    )
    assert verdict_lines(data) == [
        "line 2: --uid is not allowed: it changes who the job runs as",
        "line 2: asks for 64 CPUs; the limit is 2",
        "line 3: --output '/etc/x' is outside the folders you may use "
        "(/mnt/test-k8s/results, /mnt/test-k8s/home/alice)",
        "line 4: #K8S_IMAGE registry 'docker.io' is not allowed (allowed: nas-hub.local:5407)",
        "line 5: unknown directive #K8S_FOO "
        "(known: #K8S_IMAGE, #K8S_SHM, #K8S_WORKDIR, #K8S_SCRIPT)",
    ]


def test_relative_paths_resolve_against_chdir_then_home() -> None:
    base = b"#!/bin/sh\n#K8S_IMAGE=nas-hub.local:5407/a\n"
    assert verdict_lines(base + b"#SBATCH -o ../bob/x\necho\n") != []
    ok = b"#SBATCH --chdir=/mnt/test-k8s/results -o sub/%j.out -e /dev/null\necho\n"
    assert verdict_lines(base + ok) == []
    assert verdict_lines(base + b"#SBATCH -D /mnt/test-k8s/results -o ../x\necho\n") != []


def test_user_pattern_in_paths() -> None:
    data = b"#!/bin/sh\n#K8S_IMAGE=nas-hub.local:5407/a\n#SBATCH -o /mnt/test-k8s/home/%u/x\necho\n"
    assert verdict_lines(data) == []


def test_syntax_check_only_for_shells_and_injectable() -> None:
    calls: list[bytes] = []

    def fake(data: bytes) -> list[Problem]:
        calls.append(data)
        return [Problem(line=3, message="shell syntax: boom")]

    python = b"#!/usr/bin/python3\n#K8S_IMAGE=nas-hub.local:5407/a\nif x:\n"
    assert check_script(python, POLICY, user="alice", home=HOME, syntax=fake).accepted
    shell = b"#!/bin/sh\n#K8S_IMAGE=nas-hub.local:5407/a\nfi\n"
    verdict = check_script(shell, POLICY, user="alice", home=HOME, syntax=fake)
    assert [p.message for p in verdict.problems] == ["shell syntax: boom"]
    assert calls == [shell]


def test_canonical_paths() -> None:
    assert canonical("//mnt//x/./y/../z", "/") == "/mnt/x/z"
    assert canonical("a/b", "/base") == "/base/a/b"
    assert is_under("/mnt/r", ("/mnt/r",))
    assert is_under("/mnt/r/x", ("/mnt/r/",))
    assert not is_under("/mnt/rx", ("/mnt/r",))
