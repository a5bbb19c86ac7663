"""Every external call has a timeout: a wedged API server or command cannot hang a service.

Read from the source (no lab needed): each Kubernetes client call (``read_…``, ``list_…``,
``create_…``, ``delete_…``, ``patch_…``, ``replace_…``) passes ``_request_timeout`` (or, for a
watch, ``timeout_seconds``), and each ``subprocess`` call that waits passes ``timeout``.
"""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[3]
_KUBE_CALL = re.compile(r"^(read|list|create|delete|patch|replace|connect)_(namespaced_|node|pod)")
_WAITING = {"run", "check_output", "check_call"}


def _calls() -> list[tuple[str, ast.Call]]:
    found = []
    for package in ("services", "shared"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [
                (f"{path.relative_to(ROOT)}:{node.lineno}", node)
                for node in ast.walk(tree)
                if isinstance(node, ast.Call)
            ]
    return found


def _keywords(call: ast.Call) -> set[str | None]:
    return {k.arg for k in call.keywords}


def test_every_kubernetes_call_has_a_request_timeout() -> None:
    missing = [
        where
        for where, call in _calls()
        if isinstance(call.func, ast.Attribute)
        and _KUBE_CALL.match(call.func.attr)
        and not {"_request_timeout", "timeout_seconds"} & _keywords(call)
    ]
    assert missing == []


def test_every_subprocess_that_waits_has_a_timeout() -> None:
    missing = [
        where
        for where, call in _calls()
        if isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id == "subprocess"
        and call.func.attr in _WAITING
        and "timeout" not in _keywords(call)
    ]
    assert missing == []
