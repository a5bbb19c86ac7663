import argparse
import json
from pathlib import Path

import pytest

from shared import checks
from shared.checks import Result, check_slurm, check_smoke, command
from shared.config import NasSettings
from shared.errors import TransientError

pytestmark = pytest.mark.unit


def _args(**kw: object) -> argparse.Namespace:
    return argparse.Namespace(**({"component": None, "smoke": False, "verbose": False} | kw))


def test_one_line_per_check_and_the_exit_status_says_whether_all_passed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        checks,
        "CHECKS",
        {
            "nas": lambda: [Result("nas", "mounted", True, "detail")],
            "slurm": lambda: [Result("slurm", "backfill", False, "SchedulerType=sched/builtin")],
        },
    )
    assert command(_args(json=False)) == 1
    assert capsys.readouterr().out.splitlines() == [
        "ok   nas        mounted",
        "FAIL slurm      backfill  (SchedulerType=sched/builtin)",
        "1 passed, 1 failed",
    ]
    assert command(_args(json=False, component=["nas"], verbose=True)) == 0
    assert capsys.readouterr().out.splitlines()[0] == "ok   nas        mounted  (detail)"
    assert command(_args(json=True, component=["nas"])) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"component": "nas", "name": "mounted", "ok": True, "detail": "detail"}
    ]


def test_slurm_needs_backfill_multifactor_and_our_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {
        "ClusterName": "c",
        "SchedulerType": "sched/backfill",
        "PriorityType": "priority/basic",
        "JobSubmitPlugins": "lua",
        "Prolog": "/etc/slurm/slurm-k8s/prolog",
        "Epilog": "",
    }
    monkeypatch.setattr(checks, "_slurm_config", lambda: config)
    failed = [r.name for r in check_slurm() if not r.ok]
    assert failed == ["multifactor priority", "slurm-k8s epilog"]

    def down() -> dict[str, str]:
        raise TransientError("slurmctld not answering")

    monkeypatch.setattr(checks, "_slurm_config", down)
    assert check_slurm() == [Result("slurm", "slurmctld answers", False, "slurmctld not answering")]


def test_the_smoke_job_passes_when_its_receipt_says_completed(tmp_path: Path) -> None:
    nas = NasSettings(NAS_ROOT=tmp_path)
    for folder in (nas.submit_dir, nas.submitted_dir, nas.failed_dir):
        folder.mkdir(parents=True)

    def runs(_s: float) -> None:
        (dropped,) = nas.submit_dir.iterdir()
        receipt = nas.submitted_dir / f"{dropped.name}.receipt.json"
        document = {"job_id": 5, "status": "finished", "state": "COMPLETED", "exit_code": 0}
        receipt.write_text(json.dumps(document))

    (result,) = check_smoke(nas, sleep=runs, timeout_s=5, euid=lambda: 2001)
    assert result.ok, result
    assert "#K8S_IMAGE=" in next(nas.submit_dir.iterdir()).read_text()


def test_a_refused_smoke_job_fails_with_the_error(tmp_path: Path) -> None:
    nas = NasSettings(NAS_ROOT=tmp_path)
    for folder in (nas.submit_dir, nas.submitted_dir, nas.failed_dir):
        folder.mkdir(parents=True)

    def refused(_s: float) -> None:
        (dropped,) = nas.submit_dir.iterdir()
        (nas.failed_dir / f"{dropped.name}.error").write_text("line 3: bad image\n")

    (result,) = check_smoke(nas, sleep=refused, timeout_s=5, euid=lambda: 2001)
    assert (result.ok, result.detail) == (False, "line 3: bad image")
