"""``#K8S_WORKDIR``/``#K8S_SCRIPT`` checks: hostile paths, and "can the owner read it" as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.jobscript.k8s_paths import Account, safe_path, script_problem, under_root

pytestmark = pytest.mark.unit

ALICE = Account(2001, frozenset({2001, 2000}))
BOB_UID = 2002


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("/workspace", True),
        ("/mnt/test-k8s/home/alice/run-1", True),
        ("/a/..b/c..", True),
        ("workspace", False),
        ("", False),
        ("/workspace/../etc", False),
        ("/a/..", False),
        ("/a\tb", False),
        ("/a\x7fb", False),
    ],
)
def test_safe_path(value: str, ok: bool) -> None:
    assert safe_path(value) is ok


def test_under_root() -> None:
    assert under_root("/mnt/test-k8s/scripts/a.py", ("/mnt/test-k8s",)) == "/mnt/test-k8s"
    assert under_root("/mnt/test-k8s/a.py", ("/mnt/test-k8s/",)) == "/mnt/test-k8s"
    assert under_root("/mnt/test-k8s-other/a.py", ("/mnt/test-k8s",)) is None
    assert under_root("/mnt/test-k8s", ("/mnt/test-k8s",)) is None
    assert under_root("/etc/passwd", ("/",)) == "/"


@pytest.fixture
def nas(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the check runs as root; chown to other uids needs root")
    root = tmp_path / "nas"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts").chmod(0o1777)
    (root / "home" / "bob").mkdir(parents=True)
    (root / "home" / "bob").chmod(0o750)
    os.chown(root / "home" / "bob", BOB_UID, BOB_UID)
    tmp_path.chmod(0o755)
    return root


def put(path: Path, mode: int, uid: int, gid: int) -> str:
    path.write_text("print(1)\n")
    os.chown(path, uid, gid)
    path.chmod(mode)
    return str(path)


def problem(value: str, nas: Path, account: Account = ALICE) -> str | None:
    return script_problem(value, (str(nas),), "alice", account)


def test_a_readable_program_passes_by_owner_group_or_other(nas: Path) -> None:
    assert problem(put(nas / "scripts" / "own.py", 0o400, 2001, 2001), nas) is None
    assert problem(put(nas / "scripts" / "group.py", 0o040, BOB_UID, 2000), nas) is None
    assert problem(put(nas / "scripts" / "other.py", 0o644, BOB_UID, BOB_UID), nas) is None


def test_mode_bits_decide_as_the_kernel_would(nas: Path) -> None:
    # The owner class is used when the uid matches, even if "other" could read.
    path = put(nas / "scripts" / "x.py", 0o044, 2001, 2001)
    assert problem(path, nas) == f"#K8S_SCRIPT '{path}' cannot be read by alice (mode 0044)"
    private = put(nas / "scripts" / "bob.py", 0o600, BOB_UID, BOB_UID)
    assert problem(private, nas) == f"#K8S_SCRIPT '{private}' cannot be read by alice (mode 0600)"


def test_a_missing_program_is_reported(nas: Path) -> None:
    missing = f"{nas}/scripts/train_model.py"
    assert problem(missing, nas) == f"#K8S_SCRIPT '{missing}' does not exist"
    assert problem(f"{nas}/nowhere/x.py", nas) == f"#K8S_SCRIPT '{nas}/nowhere/x.py' does not exist"


def test_nothing_is_told_about_folders_the_owner_cannot_enter(nas: Path) -> None:
    put(nas / "home" / "bob" / "secret.py", 0o644, BOB_UID, BOB_UID)
    for name in ("secret.py", "absent.py"):
        value = f"{nas}/home/bob/{name}"
        assert problem(value, nas) == (
            f"#K8S_SCRIPT '{value}' cannot be read by alice (no access to {nas}/home/bob)"
        )


def test_symlinks_are_refused_never_followed(nas: Path) -> None:
    target = put(nas / "scripts" / "real.py", 0o644, 2001, 2001)
    (nas / "scripts" / "link.py").symlink_to(target)
    link = f"{nas}/scripts/link.py"
    assert problem(link, nas) == f"#K8S_SCRIPT '{link}' is a symlink; name the file itself"
    (nas / "via").symlink_to(nas / "home" / "bob")
    through = f"{nas}/via/secret.py"
    assert problem(through, nas) == (
        f"#K8S_SCRIPT '{through}' goes through the symlink {nas}/via; name the file itself"
    )


def test_not_a_regular_file(nas: Path) -> None:
    value = f"{nas}/scripts"
    assert problem(value, nas) == f"#K8S_SCRIPT '{value}' is not a regular file"


def test_hostile_values(nas: Path) -> None:
    assert problem("scripts/x.py", nas) == (
        "#K8S_SCRIPT 'scripts/x.py' must be an absolute path without '..' or control characters"
    )
    dotdot = f"{nas}/scripts/../../etc/passwd"
    assert "must be an absolute path without '..'" in (problem(dotdot, nas) or "")
    assert problem("/etc/passwd", nas) == (
        f"#K8S_SCRIPT '/etc/passwd' is outside the folders programs may come from ({nas})"
    )
