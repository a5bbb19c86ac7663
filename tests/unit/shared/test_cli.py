from pathlib import Path

import pytest

from shared.cli import main

pytestmark = pytest.mark.unit

REPO = Path(__file__).parents[3]


def test_validate_accepts_hello(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(REPO / "examples" / "hello.sh"), "--user", "alice"]) == 0
    assert capsys.readouterr().out.endswith(": ok\n")


def test_validate_prints_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "bad.sh"
    job.write_text("#!/bin/bash\n#SBATCH -c 9\n#K8S_IMAGE=docker.io/x\necho\n")
    assert main(["validate", str(job), "--user", "alice"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "line 2: asks for 9 CPUs; the limit is 2",
        "line 3: #K8S_IMAGE registry 'docker.io' is not allowed (allowed: nas-hub.local:5407)",
    ]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2
    assert main(["validate", str(tmp_path / "missing.sh")]) == 2
