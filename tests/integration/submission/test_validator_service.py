"""``python -m services.validator`` killed between sbatch and ack, on the lab's real broker.

The service runs as a process on a throwaway RabbitMQ vhost (so no other validator can take
the message) against a private NAS tree and the lab's real Slurm. The crash seam
``VALIDATOR_CRASH_AT=after-sbatch`` makes it SIGKILL itself right after sbatch returned a job
id, before anything was journalled, moved or acked: the worst moment. RabbitMQ redelivers the
unacked message to the restarted service, which must find the job by its key in Slurm and
finish the filing, with no second job.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.validator.handlers import submission_key
from shared.broker import VALIDATOR, Publisher
from shared.config import BrokerSettings, NasSettings
from shared.messages import Envelope, FileDetected
from shared.replay import run as replay
from shared.slurmctl import key_of
from tests.integration.conftest import lab_unavailable, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 120.0


@pytest.fixture
def tree(lab_env: dict[str, str], slurm_ready: str) -> Iterator[NasSettings]:
    """A private NAS tree whose home/alice is the lab's real one (where jobs may write)."""
    if os.geteuid() != 0:
        lab_unavailable("needs root (files are given to alice, sbatch runs through runuser)")
    nas = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s"))
    root = nas / f".validator-service-test-{uuid.uuid4().hex[:8]}"
    settings = NasSettings(NAS_ROOT=root)
    for d in (settings.submit_dir, settings.failed_dir, settings.submitted_dir):
        d.mkdir(parents=True)
    (root / "home").mkdir()
    (root / "home" / "alice").symlink_to(nas / "home" / "alice")
    yield settings
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cancel_later() -> Iterator[Callable[[int], None]]:
    ids: list[int] = []
    yield ids.append
    if ids:
        subprocess.run(["scancel", *map(str, ids)], check=False, timeout=60)


def start_validator(
    lab_env: dict[str, str], url: str, tree: NasSettings, log: Path, **extra: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **lab_env,
        "AMQP_URL": url,
        "NAS_ROOT": str(tree.nas_root),
        "LOG_FORMAT": "json",
        **extra,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.validator"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def jobs_with_key(key: str) -> list[int]:
    listing = subprocess.run(
        ["squeue", "--all", "--states=all", "--noheader", "--format=%i|%k"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return sorted(
        {
            int(line.split("|")[0].split("_")[0])
            for line in listing.splitlines()
            if key_of(line.partition("|")[2]) == key
        }
    )


def _drop_alices_hello(tree: NasSettings) -> tuple[Path, FileDetected]:
    """alice's hello.sh in the submit folder, and the event the watcher would publish for it."""
    hello = (REPO / "examples" / "hello.sh").read_bytes()
    path = tree.submit_dir / "hello.sh"
    path.write_bytes(hello)
    alice = pwd.getpwnam("alice")
    os.chown(path, alice.pw_uid, alice.pw_gid)
    st = path.stat()
    detected = FileDetected(
        path=str(path),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        sha256=hashlib.sha256(hello).hexdigest(),
        owner_uid=alice.pw_uid,
    )
    return path, detected


def _publish(settings: BrokerSettings, detected: FileDetected) -> None:
    """The file event, as the watcher publishes it."""
    publisher = Publisher(settings)
    try:
        publisher.publish(Envelope.wrap(detected))
    finally:
        publisher.close()


def test_killed_between_sbatch_and_ack_makes_no_second_job(
    lab_env: dict[str, str],
    vhost_url: str,
    tree: NasSettings,
    tmp_path: Path,
    cancel_later: Callable[[int], None],
) -> None:
    # Given alice's hello.sh in the submit folder and its event on the broker
    path, detected = _drop_alices_hello(tree)
    key = submission_key(detected)
    _publish(BrokerSettings(AMQP_URL=vhost_url), detected)

    # When the validator dies right after sbatch returned
    log = tmp_path / "validator.log"
    crashing = start_validator(lab_env, vhost_url, tree, log, VALIDATOR_CRASH_AT="after-sbatch")
    try:
        code = crashing.wait(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        crashing.kill()
        crashing.wait()
        pytest.fail(f"the validator never reached the crash seam:\n{log.read_text()[-3000:]}")
    assert code == -signal.SIGKILL, log.read_text()[-3000:]
    submitted = jobs_with_key(key)
    for job in submitted:
        cancel_later(job)
    assert len(submitted) == 1, "sbatch ran before the crash"
    assert path.exists(), "nothing was moved before the crash"

    # Then the restarted validator gets the redelivery and finishes without a second sbatch
    receipt = tree.submitted_dir / "hello.sh.receipt.json"
    survivor = start_validator(lab_env, vhost_url, tree, log)
    try:
        wait_for("the receipt", receipt.exists, timeout=DEADLINE_S, interval=0.5)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=60)
    assert jobs_with_key(key) == submitted
    assert json.loads(receipt.read_text())["job_id"] == submitted[0]
    assert not path.exists()


def test_a_file_that_ran_out_of_retries_is_answered_and_submitted_once_replayed(
    lab_env: dict[str, str],
    vhost_url: str,
    tree: NasSettings,
    tmp_path: Path,
    cancel_later: Callable[[int], None],
) -> None:
    # Given alice's hello.sh and a validator whose sbatch can never finish in time (a stand-in
    # for slurmctld down longer than the retry budget), with a budget of one retry
    path, detected = _drop_alices_hello(tree)
    settings = BrokerSettings(AMQP_URL=vhost_url)
    _publish(settings, detected)
    log = tmp_path / "validator.log"
    parked = tree.failed_dir / "hello.sh"
    notice = tree.failed_dir / "hello.sh.error"
    failing = start_validator(
        lab_env, vhost_url, tree, log, VALIDATOR_SBATCH_TIMEOUT_S="0.001", AMQP_MAX_RETRIES="1"
    )
    try:
        # When its retries are spent, the file is answered in failed/ and the message is dead
        wait_for("the file parked with an answer", notice.exists, timeout=DEADLINE_S, interval=0.5)
    finally:
        failing.send_signal(signal.SIGTERM)
        failing.wait(timeout=60)
    text = notice.read_text()
    assert "could not submit hello.sh" in text
    assert "operators have been told" in text
    assert notice.stat().st_uid == detected.owner_uid
    assert parked.read_bytes() == (REPO / "examples" / "hello.sh").read_bytes()
    assert not path.exists()
    assert '"message dead-lettered"' in log.read_text()
    listing = io.StringIO()
    assert replay(settings, [VALIDATOR], apply=False, limit=10, out=listing) == 0
    assert "still failing after 1 retries" in listing.getvalue()

    # Then, the cause fixed, the operator's replay submits it from failed/, exactly once
    survivor = start_validator(lab_env, vhost_url, tree, log)
    try:
        assert replay(settings, [VALIDATOR], apply=True, limit=10, out=io.StringIO()) == 0
        receipt = tree.submitted_dir / "hello.sh.receipt.json"
        wait_for("the receipt", receipt.exists, timeout=DEADLINE_S, interval=0.5)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=60)
    submitted = jobs_with_key(submission_key(detected))
    for job in submitted:
        cancel_later(job)
    assert len(submitted) == 1
    assert json.loads(receipt.read_text())["job_id"] == submitted[0]
    assert list(tree.failed_dir.iterdir()) == []  # the file and its notice both gone
