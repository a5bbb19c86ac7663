import json
import os
import stat
from pathlib import Path

import pytest

from services.launcher.k8s import kubeconfig_text, write_owned_file

pytestmark = pytest.mark.unit


def test_kubeconfig_is_json_with_token_and_namespace() -> None:
    doc = json.loads(
        kubeconfig_text(
            server="https://k:6443", ca_data="Q0E=", token="t", namespace="ns", user="u"
        )
    )
    assert doc["clusters"][0]["cluster"] == {
        "server": "https://k:6443",
        "certificate-authority-data": "Q0E=",
    }
    assert doc["users"][0]["user"] == {"token": "t"}
    assert doc["contexts"][0]["context"]["namespace"] == "ns"


def test_owned_file_is_atomic_private_and_replaceable(tmp_path: Path) -> None:
    target = tmp_path / "handoff" / "job-1-r0.kubeconfig"
    uid, gid = os.getuid(), os.getgid()
    write_owned_file(target, b"one", uid, gid)
    write_owned_file(target, b"two", uid, gid)  # a redelivered event rewrites it
    assert target.read_bytes() == b"two"
    info = target.stat()
    assert stat.S_IMODE(info.st_mode) == 0o400
    assert (info.st_uid, info.st_gid) == (uid, gid)
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o711
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_a_planted_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "handoff" / "job-2-r0.kubeconfig"
    target.parent.mkdir()
    target.symlink_to(victim)
    write_owned_file(target, b"token", os.getuid(), os.getgid())
    assert victim.read_text() == "keep"
    assert not target.is_symlink()
