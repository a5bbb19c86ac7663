import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from shared.errors import TransientError
from shared.slurmctl import SlurmCtl
from shared.status import collect, follow, pod_fields, status_command, table

pytestmark = pytest.mark.unit

SQUEUE = json.loads((Path(__file__).parents[2] / "data" / "squeue-22.05.json").read_text())
SQUEUE["jobs"][1]["admin_comment"] = (
    "slurmk8s-accepted; pod=slurm-jobs/job-3-r0 phase=Running exit=0"
)
SACCT = "9|FAILED|2:0|2026-12-02T08:00:00|2026-12-02T08:01:00|vm|cpu=1,gres/gpu=1|bob\n"


def fake_ctl(calls: list[Sequence[str]] | None = None) -> SlurmCtl:
    def run(argv: Sequence[str], _timeout: float) -> str:
        if calls is not None:
            calls.append(argv)
        return json.dumps(SQUEUE) if argv[0] == "squeue" else SACCT

    return SlurmCtl(runner=run)


def test_the_pod_comes_from_the_launchers_admin_comment_note() -> None:
    assert pod_fields("slurmk8s-accepted; pod=ns/job-1-r0 phase=Failed exit=137 reason=OOM") == {
        "pod": "ns/job-1-r0",
        "phase": "Failed",
        "exit": "137",
        "reason": "OOM",
    }
    assert pod_fields("") == {}


def test_rows_for_one_user_one_job_and_a_job_only_accounting_knows() -> None:
    ctl = fake_ctl()
    rows = collect(ctl, user="alice")
    assert [(r.job_id, r.state) for r in rows] == [(2, "CANCELLED"), (3, "RUNNING")]
    running = collect(ctl, job_id=3)[0]
    assert (running.pod, running.pod_phase, running.pod_exit) == (
        "slurm-jobs/job-3-r0",
        "Running",
        "0",
    )
    assert running.ended == ""  # squeue's end time of a running job is only its limit
    old = collect(ctl, job_id=9)[0]
    assert (old.user, old.state, old.pod_exit, old.gpus, old.node) == (
        "bob",
        "FAILED",
        "2",
        1,
        "vm",
    )
    assert collect(ctl, user="carol") == []


def test_the_table_has_a_header_and_dashes_for_empty_cells() -> None:
    lines = table(collect(fake_ctl(), job_id=3)).splitlines()
    assert lines[0].split()[:4] == ["JOBID", "USER", "STATE", "REASON"]
    assert lines[1].split()[0] == "3"
    assert " - " in lines[1]


def test_status_json_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(jobid=3, user=None, all=False, json=True)
    assert status_command(args, fake_ctl()) == 0
    assert json.loads(capsys.readouterr().out)[0]["job_id"] == 3

    def down(argv: Sequence[str], _timeout: float) -> str:
        raise TransientError("slurmctld not answering")

    assert status_command(args, SlurmCtl(runner=down)) == 1
    assert "cannot ask Slurm" in capsys.readouterr().err


def test_follow_copies_what_the_job_writes_until_it_has_ended(tmp_path: Path) -> None:
    path = tmp_path / "out"
    writes = iter([b"one\n", b"two\n", b""])
    checks = iter([False, False, True])

    def sleep(_s: float) -> None:
        with path.open("ab") as handle:
            handle.write(next(writes))

    out = io.BytesIO()
    follow(str(path), out, ended=lambda: next(checks), sleep=sleep)
    assert out.getvalue() == b"one\ntwo\n"
