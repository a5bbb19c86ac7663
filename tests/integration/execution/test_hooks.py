"""The installed prolog/epilog on the lab's RabbitMQ: delivered, spooled, flushed, deduplicated.

Runs /etc/slurm/slurm-k8s/{prolog,epilog} as slurmd would (root, a job's environment), but with
a throwaway spool and log so the node's real outbox is untouched. Job ids are far above the
lab's, so services that see these events find no such job and drop them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pytest

from shared.broker.connection import declare_topology
from tests.integration.conftest import lab_unavailable, wait_for

pytestmark = pytest.mark.integration

HOOKS = Path("/etc/slurm/slurm-k8s")
PYTHON = "/opt/slurm-k8s/venv/bin/python"
CLOSED_PORT_URL = "amqp://nobody:nothing@127.0.0.1:1/slurm-k8s"


@pytest.fixture
def installed() -> None:
    if os.geteuid() != 0:
        lab_unavailable("the hooks run as root")
    for path in (HOOKS / "prolog", HOOKS / "epilog", Path(PYTHON)):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is not installed: run lab/slurm/install-hooks.sh")


@dataclass
class Events:
    channel: Any
    queue: str


@pytest.fixture
def events(amqp_url: str) -> Iterator[Events]:
    """A private queue bound to the events exchange for job.started and job.ended."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    declare_topology(channel)  # what every service does at start; idempotent
    queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
    for key in ("job.started", "job.ended"):
        channel.queue_bind(queue, "slurm-k8s.events", routing_key=key)
    yield Events(channel, queue)
    connection.close()


@pytest.fixture
def job_env(tmp_path: Path, amqp_url: str) -> dict[str, str]:
    job_id = random.randint(900_000, 999_999)
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_UID": "2001",
        "SLURM_JOB_GID": "2000",
        "SLURM_JOB_USER": "alice",
        "SLURMD_NODENAME": os.uname().nodename.split(".")[0],
        "SLURM_JOB_PARTITION": "debug",
        "SLURM_JOB_CPUS_PER_NODE": "1",
        "SLURM_JOB_RESTART_COUNT": "0",
        "SLURM_JOB_STDOUT": "/mnt/test-k8s/results/%j.out",
        "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
        "SLURM_JOB_GPUS": "1",
        "AMQP_URL": amqp_url,
        "HOOKS_SPOOL_DIR": str(tmp_path / "outbox"),
        "HOOKS_LOG_FILE": str(tmp_path / "hooks.log"),
    }


def run_hook(name: str, env: dict[str, str]) -> float:
    started = time.monotonic()
    done = subprocess.run([str(HOOKS / name)], env=env, capture_output=True, timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 0
    assert done.stdout == b"", "hooks print nothing"
    assert done.stderr == b"", "hooks print nothing"
    print(f"{name}: {elapsed * 1000:.0f} ms")
    return elapsed


def receive(
    events: Events,
    n: int,
    job_id: str,
    wait_s: float = 20,
) -> list[dict]:
    """Up to n events of this job (the node's real hooks may publish meanwhile)."""
    got: list[dict] = []
    deadline = time.monotonic() + wait_s
    while len(got) < n and time.monotonic() < deadline:
        method, props, body = events.channel.basic_get(events.queue, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        doc = json.loads(body)
        assert props.message_id == doc["message_id"]
        if str(doc["body"]["job_id"]) == job_id:
            got.append(doc)
    return got


def log_lines(env: dict[str, str]) -> list[dict]:
    return [json.loads(line) for line in Path(env["HOOKS_LOG_FILE"]).read_text().splitlines()]


def spooled(env: dict[str, str]) -> list[str]:
    return sorted(p.name for p in Path(env["HOOKS_SPOOL_DIR"]).glob("*.json"))


def test_prolog_and_epilog_publish_their_events(
    installed: None, events: Events, job_env: dict[str, str]
) -> None:
    run_hook("prolog", job_env)
    run_hook("epilog", job_env)
    got = receive(events, 2, job_env["SLURM_JOB_ID"])
    assert [d["body"]["type"] for d in got] == ["job.started", "job.ended"]
    body = got[0]["body"]
    assert body["job_id"] == int(job_env["SLURM_JOB_ID"])
    assert (body["user"], body["uid"], body["gid"], body["gpus"]) == ("alice", 2001, 2000, "1")
    assert spooled(job_env) == [], "confirmed events leave the spool"


def test_duplicate_prolog_runs_carry_the_same_message_id(
    installed: None, events: Events, job_env: dict[str, str]
) -> None:
    run_hook("prolog", job_env)
    run_hook("prolog", job_env)
    got = receive(events, 2, job_env["SLURM_JOB_ID"])
    assert len(got) == 2
    assert got[0]["message_id"] == got[1]["message_id"]


def test_broker_down_spools_exits_zero_and_flush_delivers_later(
    installed: None, events: Events, job_env: dict[str, str]
) -> None:
    down = {**job_env, "AMQP_URL": CLOSED_PORT_URL}
    flushers: list[int] = []
    try:
        run_hook("prolog", down)
        assert spooled(job_env) == [f"job.started.{job_env['SLURM_JOB_ID']}-r0.json"]
        done = [line for line in log_lines(job_env) if line["event"] == "hook.done"][-1]
        assert done["remaining"] == 1
        flushers = [done["flusher_pid"]] if "flusher_pid" in done else []
        assert flushers, "a detached flusher was started"
        assert receive(events, 1, job_env["SLURM_JOB_ID"], wait_s=3) == []
    finally:
        for pid in flushers:  # it would retry the closed port forever
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    # The broker is back: one flush pass (what the detached flusher does) delivers it.
    subprocess.run(
        [PYTHON, "-I", "-m", "services.hooks", "flush"], env=job_env, check=True, timeout=30
    )
    got = receive(events, 1, job_env["SLURM_JOB_ID"])
    assert [d["body"]["type"] for d in got] == ["job.started"]
    assert spooled(job_env) == []


def test_next_hook_delivers_what_an_outage_left_behind(
    installed: None, events: Events, job_env: dict[str, str]
) -> None:
    # The broker address comes from a services.env file here, as slurmd's bare environment
    # makes it in production.
    env_file = Path(job_env["HOOKS_SPOOL_DIR"]).parent / "services.env"
    env_file.write_text(f"AMQP_URL={job_env['AMQP_URL']}\n")
    spool = Path(job_env["HOOKS_SPOOL_DIR"])
    spool.mkdir(mode=0o700)
    # An event left behind by an earlier outage, as the spool would hold it:
    run_hook("epilog", {**job_env, "AMQP_URL": CLOSED_PORT_URL, "HOOKS_ENV_FILE": "/none"})
    pids = [line.get("flusher_pid") for line in log_lines(job_env) if line["event"] == "hook.done"]
    for pid in pids:
        if pid:
            os.kill(pid, signal.SIGTERM)
    # The next hook on the node (broker reachable) sends its own event and the leftover.
    env = {k: v for k, v in job_env.items() if k != "AMQP_URL"} | {"HOOKS_ENV_FILE": str(env_file)}
    run_hook("prolog", env)
    got = receive(events, 2, job_env["SLURM_JOB_ID"])
    assert sorted(d["body"]["type"] for d in got) == ["job.ended", "job.started"]
    assert spooled(job_env) == []


def test_slurmd_runs_the_hooks_for_a_real_job(
    installed: None,
    events: Events,
    slurm_ready: str,
    run_as: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    done = run_as(
        "alice",
        ["sbatch", "--parsable", "--gres=gpu:1", "-o", "/dev/null", "--wrap", "true"],
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    got = receive(events, 2, job_id, wait_s=90)
    assert [d["body"]["type"] for d in got] == ["job.started", "job.ended"]
    body = got[0]["body"]
    assert (body["user"], body["uid"], body["node"]) == ("alice", 2001, slurm_ready)
    assert body["gpus"] != "", "SLURM_JOB_GPUS reaches the prolog"
    assert got[0]["message_id"] != got[1]["message_id"]


@contextlib.contextmanager
def relay_on(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """The node's relay (installed package) on this test's outbox, holding it."""
    relay = subprocess.Popen(
        [PYTHON, "-I", "-m", "services.hooks", "relay"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            "the relay to hold the outbox",
            lambda: any(line["event"] == "relay.started" for line in log_lines_if_any(env)),
            timeout=30,
            interval=0.05,
        )
        yield relay
    finally:
        relay.terminate()
        relay.wait(30)


def log_lines_if_any(env: dict[str, str]) -> list[dict]:
    return log_lines(env) if Path(env["HOOKS_LOG_FILE"]).exists() else []


def test_with_the_relay_the_hooks_hand_over_and_the_relay_publishes(
    installed: None, events: Events, job_env: dict[str, str]
) -> None:
    with relay_on(job_env):
        prolog_s = run_hook("prolog", job_env)
        epilog_s = run_hook("epilog", job_env)
        got = receive(events, 2, job_env["SLURM_JOB_ID"])
    print(f"hand-over: prolog {prolog_s * 1000:.0f} ms, epilog {epilog_s * 1000:.0f} ms")
    assert [d["body"]["type"] for d in got] == ["job.started", "job.ended"]
    body = got[0]["body"]
    assert body["job_id"] == int(job_env["SLURM_JOB_ID"])
    assert (body["user"], body["uid"], body["gid"], body["gpus"]) == ("alice", 2001, 2000, "1")
    lines = log_lines(job_env)
    assert not [line for line in lines if line["event"] == "hook.done"], "no Python hook ran"
    assert [line["file"] for line in lines if line["event"] == "event.published"] == [
        f"job.started.{job_env['SLURM_JOB_ID']}-r0.json",
        f"job.ended.{job_env['SLURM_JOB_ID']}-r0.json",
    ]
    assert list(Path(job_env["HOOKS_SPOOL_DIR"]).glob("*.env")) == []


def test_what_a_stopped_relay_left_is_published_by_the_next_hook(
    installed: None, events: Events, job_env: dict[str, str]
) -> None:
    outbox = Path(job_env["HOOKS_SPOOL_DIR"])
    outbox.mkdir(mode=0o700)
    # A relay that held the outbox and stopped before its pass: the prolog's environment
    # was handed over and nobody published it.
    holder = subprocess.Popen(
        ["flock", str(outbox / ".relay.lock"), "sleep", "600"], start_new_session=True
    )
    try:
        wait_for(
            "the stand-in to hold the lock",
            lambda: subprocess.run(["flock", "-n", str(outbox / ".relay.lock"), "true"]).returncode,
            timeout=10,
            interval=0.05,
        )
        run_hook("prolog", job_env)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and the sleep that holds the lock
        holder.wait()
    assert [p.name.split(".")[0] for p in outbox.glob("*.env")] == ["prolog"]
    # No relay now: the epilog's Python hook sends the leftover and its own event.
    run_hook("epilog", job_env)
    got = receive(events, 2, job_env["SLURM_JOB_ID"])
    assert [d["body"]["type"] for d in got] == ["job.started", "job.ended"]
    assert list(outbox.glob("*.env")) == []
    assert spooled(job_env) == []
