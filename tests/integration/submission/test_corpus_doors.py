"""The hostile corpus through both doors of the lab (issue 9, item 4).

* **NAS door, in bulk.** Every NAS case of ``tests/data/corpus`` is built in a hidden staging
  folder and renamed into a private ``submit/`` at once (``door`` fixture of
  ``test_attacks_nas``: our own watcher and validator on a throwaway vhost, the lab's real
  Slurm). The ``changes`` cases are changed once the watcher has published them, then the
  validator starts. Each file must end where its case says, with its reason in the ``.error``;
  neither service may die or log a traceback; and the Slurm jobs made since the pass began
  are exactly the receipts' jobs (nothing submitted that was not validated).
* **sbatch door.** Every case with an ``sbatch`` verdict is submitted by its owner with plain
  ``sbatch`` (job_submit.lua decides, after sbatch's own checks): accepted ones are held and
  cancelled, refused ones must say the case's reason.

Accepted corpus jobs carry ``#SBATCH --hold``: no pass ever runs one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from shared.messages import shown
from tests.corpus import CHANGES, Case, build, change, load
from tests.integration.conftest import RunAs, wait_for
from tests.integration.submission.test_attacks_nas import Door, door, slurm_jobs

pytestmark = pytest.mark.integration
__all__ = ["door"]  # the fixture, imported for this module's tests

CASES = load()
NAS_CASES = [c for c in CASES if c.nas is not None]
SBATCH_CASES = [c for c in CASES if c.sbatch is not None]
PASS_S = 240.0
"""The bulk pass's bound: a door that answers 150 files slower than this is stuck, not slow."""


def _where(door: Door, name: str) -> str:
    """'submitted', 'failed', 'stays' (still in submit/ or its sub-folders) or 'gone'."""
    outcome = door.outcome(name)
    if outcome is not None:
        return outcome
    if any(p.name == name for p in door.submit.rglob("*") if not p.name.startswith(".")):
        return "stays"
    return "gone"


def _answered(door: Door, case: Case, name: str) -> bool:
    assert case.nas is not None
    if case.nas.verdict in ("submitted", "failed"):
        return door.outcome(name) is not None
    return True  # "stays"/"gone" are checked once everything else is answered


def _new_jobs(since: float) -> dict[int, dict[str, Any]]:
    """alice's and bob's jobs submitted since ``since`` (epoch s) that carry a validator key."""
    return {
        int(j["job_id"]): j
        for j in slurm_jobs()
        if j.get("user_name") in ("alice", "bob")
        and _number(j.get("submit_time")) >= since
        and str(j.get("comment", "")).startswith("slurmk8s-key=")
    }


def _number(value: Any) -> float:
    """squeue --json gives numbers bare (22.05) or as {"number": n} (later releases)."""
    if isinstance(value, dict):
        value = value.get("number", 0)
    return float(value or 0)


def _compare(door: Door, entries: Iterable[tuple[Case, str]]) -> tuple[list[str], dict[int, str]]:
    """What differs from the manifest, and the receipts' job ids (case id by job id)."""
    wrong: list[str] = []
    receipts: dict[int, str] = {}
    for case, entry in entries:
        assert case.nas is not None
        name = shown(Path(entry).name)  # the watcher renames a name that is not UTF-8 so
        where = _where(door, name)
        if where == "submitted":
            receipt = door.receipt(name)
            receipts[int(receipt["job_id"])] = case.id
            door.jobs.append(int(receipt["job_id"]))
            if receipt["user"] != case.owner:
                wrong.append(f"{case.id}: submitted as {receipt['user']}, owner {case.owner}")
        found = ""
        if where != case.nas.verdict:
            found = f"{case.id}: {where}, expected {case.nas.verdict}: {door.error(name)}"
        elif where == "failed" and case.nas.reason not in door.error(name):
            found = f"{case.id}: reason {case.nas.reason!r} not in {door.error(name)!r}"
        if found and case.xfail:
            print(f"known gap (xfail): {found} -- {case.xfail}")
        elif found:
            wrong.append(found)
    return wrong, receipts


def test_every_nas_case_gets_its_answer_and_only_validated_files_are_submitted(
    door: Door, run_as: RunAs
) -> None:
    run = uuid.uuid4().hex[:6]
    since = time.time() - 1  # squeue's submit_time has whole seconds
    staging = door.submit / f".corpus-{run}"  # hidden: the watcher never looks inside
    staging.mkdir()
    door.start("watcher")
    entries: dict[str, tuple[Case, str]] = {}
    for case in NAS_CASES:
        top, entry = build(case, staging, run)
        os.rename(top, door.submit / top.name)
        entries[case.id] = (case, entry)
    for case, entry in entries.values():
        if case.kind in CHANGES:
            path = door.submit / entry
            wait_for(f"the watcher to publish {entry!r}", lambda p=path: door.published(p), 60, 0.2)
            change(case, path)
    door.start("validator")
    started = time.monotonic()

    def unanswered() -> list[str]:
        return [
            case.id
            for case, entry in entries.values()
            if not case.xfail and not _answered(door, case, shown(Path(entry).name))
        ]

    wait_for("every corpus file to be answered", lambda: not unanswered(), PASS_S, 1.0)
    print(f"\nmeasured: {len(entries)} corpus files answered in {time.monotonic() - started:.1f} s")

    wrong, receipts = _compare(door, entries.values())
    for name, proc in door.procs.items():
        if proc.poll() is not None:
            wrong.append(f"the {name} died (exit {proc.returncode})")
        if "Traceback" in (door.logs / f"{name}.log").read_text(errors="replace"):
            wrong.append(f"the {name} logged a traceback")
    made = _new_jobs(since)
    door.jobs.extend(made)  # cancelled at the end, whatever they are
    strays = sorted(set(made) - set(receipts))
    if strays:
        wrong.append(f"jobs without a receipt: {[(j, made[j].get('name')) for j in strays]}")
    print("\n".join(wrong))
    assert wrong == [], "\n".join(wrong)
    shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture
def sbatch_home(lab_env: dict[str, str]) -> Any:
    """A folder in each lab user's NAS home for the sbatch pass, removed afterwards."""
    run = uuid.uuid4().hex[:6]
    nas = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s"))
    made = {}
    for user in ("alice", "bob"):
        folder = nas / "home" / user / f".corpus-{run}"
        folder.mkdir()
        shutil.chown(folder, user, user)
        made[user] = folder
    try:
        yield run, made
    finally:
        for folder in made.values():
            shutil.rmtree(folder, ignore_errors=True)


def test_every_sbatch_case_gets_its_verdict_from_plain_sbatch(
    slurm_ready: str, run_as: RunAs, sbatch_home: Any
) -> None:
    run, folders = sbatch_home
    wrong: list[str] = []
    jobs: list[str] = []
    started = time.monotonic()
    try:
        for case in SBATCH_CASES:
            assert case.sbatch is not None
            path = folders[case.owner] / case.name(run)
            path.write_bytes(case.content())
            shutil.chown(path, case.owner, case.owner)
            done = run_as(case.owner, ["sbatch", str(path)], cwd=str(path.parent), text=False)
            out = done.stdout.decode(errors="replace")
            err = done.stderr.decode(errors="replace")
            if found := re.search(r"Submitted batch job (\d+)", out):
                jobs.append(found[1])
            verdict = "accepted" if done.returncode == 0 else "refused"
            if verdict != case.sbatch.verdict:
                wrong.append(f"{case.id}: {verdict}, expected {case.sbatch.verdict}: {err!r}")
            elif verdict == "refused" and case.sbatch.reason not in err:
                wrong.append(f"{case.id}: reason {case.sbatch.reason!r} not in {err!r}")
    finally:
        if jobs:
            subprocess.run(["scancel", *jobs], check=False, timeout=60)
    print(f"\nmeasured: {len(SBATCH_CASES)} sbatch cases in {time.monotonic() - started:.1f} s")
    print("\n".join(wrong))
    assert wrong == [], "\n".join(wrong)
