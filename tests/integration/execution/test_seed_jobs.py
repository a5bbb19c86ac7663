"""The seed's own kind of job files, run on the lab as its guides write them (issue 12).

Both doors: ``cat > submit/x.sh`` as alice (the seed's quick-start habit) and ``sbatch``.
The jobs are ``examples/``: a GPU sample in the style of the seed's ``example-job.sh``
(``--partition=gpu``, ``#K8S_WORKDIR``, ``#K8S_SCRIPT``, writes to ``/results`` and copies to
``results/$SLURM_JOB_ID/``), a ``#!/bin/bash`` brace loop on alpine (no bash in the image), and
a Python job that runs a program from ``/mnt/test-k8s/scripts/`` on ``python:3.11``. Each
test submits one or two short jobs.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
NAS = Path("/mnt/test-k8s")
RESULTS = NAS / "results"
SCRIPTS = NAS / "scripts"
ALICE, BOB = 2001, 2002


@pytest.fixture
def program(run_as: Any) -> Iterator[Any]:
    """Put an examples/scripts program into /mnt/test-k8s/scripts/ as alice, under a fresh name."""
    made: list[Path] = []

    def put(name: str) -> Path:
        source = EXAMPLES / "scripts" / name
        target = SCRIPTS / f"{source.stem}-{uuid.uuid4().hex[:8]}{source.suffix}"
        run_as(
            "alice", ["sh", "-c", 'cat > "$0"', str(target)], input=source.read_text(), check=True
        )
        made.append(target)
        return target

    yield put
    for path in made:
        path.unlink(missing_ok=True)


def example(name: str, **replace: str) -> str:
    text = (EXAMPLES / name).read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def through_nas(jobs: Any, run_as: Any, text: str) -> tuple[int, dict[str, Any]]:
    """Drop the job as alice with `cat > submit/x.sh`; wait for its receipt."""
    name = f"seed-{uuid.uuid4().hex[:8]}.sh"
    run_as(
        "alice",
        ["sh", "-c", 'cat > "$0"', str(NAS / "slurm-jobs" / "submit" / name)],
        input=text,
        check=True,
    )
    receipt = NAS / "slurm-jobs" / "submitted" / f"{name}.receipt.json"
    failed = NAS / "slurm-jobs" / "failed" / f"{name}.error"

    def filed() -> bool:
        if failed.exists():
            pytest.fail(f"refused at the NAS door: {failed.read_text()}")
        return receipt.is_file()

    jobs.wait_for("the receipt", filed, timeout=120)
    body = json.loads(receipt.read_text())
    jobs.submitted.append(int(body["job_id"]))
    return int(body["job_id"]), body


def owned_by_alice(path: Path) -> None:
    st = path.lstat()
    assert (st.st_uid, st.st_gid) == (ALICE, ALICE), path
    assert not path.is_symlink()


@pytest.mark.parametrize("door", ["sbatch", "nas"])
def test_hello_bash_brace_loop_on_alpine_prints_ten_iterations(
    door: str, request: pytest.FixtureRequest, jobs: Any, run_as: Any
) -> None:
    text = example("hello-bash.sh")
    if door == "nas":
        request.getfixturevalue("nas_door")
        job_id, _ = through_nas(jobs, run_as, text)
    else:
        job_id = jobs.submit("alice", text)
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"{job_id}.out").read_text()
    lines = [line for line in out.splitlines() if line.startswith("Hello from Slurm-K8s!")]
    assert lines == [f"Hello from Slurm-K8s! iteration {i}" for i in range(1, 11)], out
    assert "/bin/bash is not in the image; running it with the bash slurm-k8s provides" in out


def test_an_interpreter_missing_from_the_image_fails_at_once_with_the_reason(jobs: Any) -> None:
    text = (
        "#!/usr/bin/python3\n#SBATCH --mem=64M\n#SBATCH -o /mnt/test-k8s/results/%j.out\n"
        "#K8S_IMAGE=nas-hub.local:5407/alpine:latest\nprint('never runs under sh')\n"
    )
    job_id = jobs.submit("alice", text)
    assert jobs.wait_done(job_id) == ["FAILED", "127:0"]
    out = (RESULTS / f"{job_id}.out").read_text()
    assert (
        "the interpreter /usr/bin/python3 is not in the image, so the job script cannot run" in out
    )
    assert "never runs" not in out.replace("print('never runs under sh')", "")


def test_python_job_runs_its_k8s_script_through_the_nas_door(
    nas_door: None, jobs: Any, run_as: Any, program: Any
) -> None:
    analyze = program("analyze.py")
    text = example("python-job.sh", **{"/mnt/test-k8s/scripts/analyze.py": str(analyze)})
    job_id, receipt = through_nas(jobs, run_as, text)
    assert receipt["k8s_script"] == str(analyze)
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"{job_id}.out").read_text()
    assert "python 3.11" in out, out
    assert "in /workspace" in out
    assert "mean=4.467" in out
    # The program wrote only to /results; slurm-k8s merged it into results/<jobid>/.
    folder = RESULTS / str(job_id)
    owned_by_alice(folder)
    assert (folder / "summary.txt").read_text() == f"job {job_id}: mean 4.467\n"
    owned_by_alice(folder / "summary.txt")
    summary_path = RESULTS / f"{job_id}.out.summary.json"
    jobs.wait_for("the collector's summary", summary_path.is_file)
    summary = json.loads(summary_path.read_text())
    assert summary["k8s_script"] == str(analyze)
    assert summary["results_dir"] == str(folder)


@pytest.mark.parametrize("door", ["sbatch", "nas"])
def test_the_seed_style_gpu_sample_runs_through_both_doors(
    door: str, request: pytest.FixtureRequest, jobs: Any, run_as: Any, program: Any
) -> None:
    train = program("train_model.py")
    text = example("example-job.sh", **{"/mnt/test-k8s/scripts/train_model.py": str(train)})
    if door == "nas":
        request.getfixturevalue("nas_door")
        job_id, receipt = through_nas(jobs, run_as, text)
        assert receipt["k8s_script"] == str(train)
    else:
        job_id = jobs.submit("alice", text)
    assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
    out = (RESULTS / f"{job_id}.out").read_text()
    assert f"job {job_id} on " in out, out
    assert " in /workspace, GPUs (Slurm's indices): " in out
    assert "device: none (no PyTorch in this image)" in out
    assert "epoch 3/3 loss=0.1250" in out
    assert f"results in /mnt/test-k8s/results/{job_id}/" in out
    assert out.rstrip().endswith("[slurm-k8s] outcome: Succeeded exit=0")
    folder = RESULTS / str(job_id)
    owned_by_alice(folder)
    assert json.loads((folder / "metrics.json").read_text())["job"] == str(job_id)
    assert (folder / "model.txt").read_text() == "weights after 3 epochs\n"


def test_a_results_folder_planted_by_another_user_is_moved_aside_never_used(
    jobs: Any, run_as: Any
) -> None:
    """bob plants results/<alice's next job id> before it starts: a symlink into his own
    folder, then (second job) a world-writable folder of his. Neither receives alice's
    results; alice's job gets a folder of her own."""
    body = "echo secret-of-alice > /results/secret.txt"
    text = jobs.script(
        "nas-hub.local:5407/alpine:latest", body, "--mem=64M", "-o /mnt/test-k8s/results/%j.out"
    )
    trap = NAS / "home" / "bob" / f"trap-{uuid.uuid4().hex[:6]}"
    run_as("bob", ["mkdir", "-m", "0777", str(trap)], check=True)
    planted = []
    for how in ("symlink", "directory"):
        job_id = jobs.submit("alice", text, "--hold")
        target = RESULTS / str(job_id)
        if how == "symlink":
            run_as("bob", ["ln", "-s", str(trap), str(target)], check=True)
        else:
            run_as("bob", ["mkdir", "-m", "0777", str(target)], check=True)
        planted.append((job_id, target))
        subprocess.run(["scontrol", "release", str(job_id)], check=True, timeout=30)
    for job_id, target in planted:
        assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
        owned_by_alice(target)
        assert (target / "secret.txt").read_text() == "secret-of-alice\n"
        (aside,) = RESULTS.glob(f".slurm-k8s-moved.{job_id}.*")
        assert aside.lstat().st_uid == BOB
        if aside.is_symlink():
            aside.unlink()
        else:
            assert list(aside.iterdir()) == []  # bob's folder got nothing of alice's
            aside.rmdir()
    assert list(trap.iterdir()) == []
    trap.rmdir()


def test_a_missing_k8s_script_is_refused_with_its_line_at_both_doors(
    nas_door: None, jobs: Any, run_as: Any
) -> None:
    missing = f"{SCRIPTS}/train_model-{uuid.uuid4().hex[:8]}.py"
    text = example("example-job.sh", **{"/mnt/test-k8s/scripts/train_model.py": missing})
    line = 1 + text.splitlines().index(f"#K8S_SCRIPT={missing}")
    expected = f"line {line}: #K8S_SCRIPT '{missing}' does not exist"
    done = run_as("alice", ["sbatch", "--parsable"], input=text)
    assert done.returncode != 0
    assert f"sbatch: error: {expected}" in done.stderr
    name = f"seed-{uuid.uuid4().hex[:8]}.sh"
    run_as(
        "alice",
        ["sh", "-c", 'cat > "$0"', str(NAS / "slurm-jobs" / "submit" / name)],
        input=text,
        check=True,
    )
    error = NAS / "slurm-jobs" / "failed" / f"{name}.error"
    jobs.wait_for("the error file", error.is_file, timeout=120)
    assert expected in error.read_text().splitlines()
    error.unlink()
    (NAS / "slurm-jobs" / "failed" / name).unlink()


def test_k8s_script_in_a_private_home_the_owner_runs_it_others_are_refused_at_once(
    nas_door: None, jobs: Any, run_as: Any
) -> None:
    """slurmctld (SlurmUser) cannot look inside alice's 0750 home: her own job is let through
    and the launcher (root) checks again before the Pod; bob naming the same file is refused
    at both doors without learning whether it exists."""
    program = NAS / "home" / "alice" / f"private-{uuid.uuid4().hex[:8]}.py"
    run_as(
        "alice",
        ["sh", "-c", 'cat > "$0"', str(program)],
        input="print('private run')\n",
        check=True,
    )
    try:
        text = example("python-job.sh", **{"/mnt/test-k8s/scripts/analyze.py": str(program)})
        job_id = jobs.submit("alice", text)
        assert jobs.wait_done(job_id) == ["COMPLETED", "0:0"]
        assert "private run" in (RESULTS / f"{job_id}.out").read_text()
        for name in (program.name, "absent.py"):
            value = f"{program.parent}/{name}"
            text = example("python-job.sh", **{"/mnt/test-k8s/scripts/analyze.py": value})
            expected = (
                f"line 7: #K8S_SCRIPT '{value}' cannot be read by bob "
                f"(no access to {program.parent})"
            )
            done = run_as("bob", ["sbatch", "--parsable"], input=text)
            assert done.returncode != 0
            assert f"sbatch: error: {expected}" in done.stderr
        drop = f"seed-{uuid.uuid4().hex[:8]}.sh"
        run_as(
            "bob",
            ["sh", "-c", 'cat > "$0"', str(NAS / "slurm-jobs" / "submit" / drop)],
            input=text,
            check=True,
        )
        error = NAS / "slurm-jobs" / "failed" / f"{drop}.error"
        jobs.wait_for("bob's error file", error.is_file, timeout=120)
        assert expected in error.read_text().splitlines()
        error.unlink()
        (NAS / "slurm-jobs" / "failed" / drop).unlink()
    finally:
        program.unlink()
