"""The suite's own rules, read from its source: lab tests fail under CI, and poll one way.

A lab test that calls ``pytest.skip`` itself passes silently in CI when the lab is broken;
it must call ``lab_unavailable`` (skip locally, fail under ``CI=true``). A file's own polling
helper (``def _wait``) drifts from the suite's one ``wait_for``.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

INTEGRATION = Path(__file__).parents[1] / "integration"
CONFTEST = INTEGRATION / "conftest.py"


def _modules() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(INTEGRATION.rglob("*.py"))
    ]


def test_no_lab_test_skips_by_itself() -> None:
    skipping = [
        f"{path.relative_to(INTEGRATION)}:{node.lineno}"
        for path, tree in _modules()
        if path != CONFTEST
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "skip"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "pytest"
    ]
    assert skipping == [], "use lab_unavailable(...) from tests/integration/conftest.py"


def test_no_file_has_its_own_polling_helper() -> None:
    helpers = [
        f"{path.relative_to(INTEGRATION)}:{node.lineno}"
        for path, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name in ("_wait", "wait", "_poll")
    ]
    assert helpers == [], "use wait_for(...) from tests/integration/conftest.py"
