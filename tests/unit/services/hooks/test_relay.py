import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import watchfiles

from services.hooks.__main__ import main
from services.hooks.events import build_event
from services.hooks.hooklog import HookLog
from services.hooks.relay import is_new_event, relay, watch_outbox
from services.hooks.spool import FLUSH_LOCK, RELAY_LOCK, Spool
from shared.errors import BrokerUnavailable
from tests.integration.conftest import wait_for
from tests.unit.services.hooks.test_spool_and_flush import ENV

pytestmark = pytest.mark.unit

Batches = Iterator[set[tuple[watchfiles.Change, str]]]
ADDED = {(watchfiles.Change.added, "/outbox/job.started.42-r0.json")}


class KeptFakeSender:
    """Records sends and heartbeats; fails while ``down`` is set."""

    def __init__(self, down: int = 0) -> None:
        self.sent: list[str] = []
        self.down = down
        self.idled = 0
        self.closed = 0
        self.arrived = threading.Event()

    def send(
        self, routing_key: str, message_id: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        if self.down:
            self.down -= 1
            raise BrokerUnavailable("down")
        self.sent.append(routing_key)
        self.arrived.set()

    def idle(self) -> None:
        self.idled += 1

    def close(self) -> None:
        self.closed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "outbox")


@pytest.fixture
def log(tmp_path: Path) -> HookLog:
    return HookLog(tmp_path / "hooks.log", "relay")


def logged(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "hooks.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def logs(tmp_path: Path, event: str) -> bool:
    return any(line["event"] == event for line in logged(tmp_path))


def test_the_relay_sends_what_waited_before_it_started_then_what_lands(
    spool: Spool, log: HookLog
) -> None:
    spool.put(build_event("prolog", ENV))
    sender = KeptFakeSender()

    def changes(_spool: Spool, _stop: threading.Event) -> Batches:
        yield set()  # the first tick: the watch is live
        assert sender.sent == ["job.started"]
        spool.put(build_event("epilog", ENV))
        yield set(ADDED)

    relay(spool, sender, log, max_backoff_s=60, stop=threading.Event(), changes=changes)
    assert sender.sent == ["job.started", "job.ended"]
    assert spool.pending() == []
    assert sender.closed == 1


def test_the_relay_takes_the_node_only_once_its_watch_is_live(spool: Spool, log: HookLog) -> None:
    def changes(_spool: Spool, _stop: threading.Event) -> Batches:
        assert not spool.locked(RELAY_LOCK), "locked before the watch could see a file"
        yield set()
        assert spool.locked(RELAY_LOCK)

    relay(spool, KeptFakeSender(), log, max_backoff_s=60, stop=threading.Event(), changes=changes)
    assert not spool.locked(RELAY_LOCK), "released when the relay stops"


def test_a_second_relay_waits_as_a_standby_until_the_node_is_free(
    spool: Spool, log: HookLog, tmp_path: Path
) -> None:
    spool.put(build_event("prolog", ENV))
    sender = KeptFakeSender()
    standby = threading.Thread(
        target=relay,
        args=(spool, sender, log),
        kwargs={
            "max_backoff_s": 60,
            "stop": threading.Event(),
            "changes": lambda _s, _e: iter([set()]),
        },
    )
    with spool.lock(RELAY_LOCK) as held:
        assert held
        standby.start()
        wait_for("the standby's log line", lambda: logs(tmp_path, "relay.standby"), 10, 0.02)
        assert sender.sent == [], "nothing is sent while another relay holds the node"
    standby.join(10)
    assert sender.sent == ["job.started"]


def test_while_the_broker_is_away_the_relay_backs_off_but_tries_each_new_event_at_once(
    spool: Spool, log: HookLog, tmp_path: Path
) -> None:
    spool.put(build_event("prolog", ENV))
    sender = KeptFakeSender(down=3)
    clock = Clock()
    ticks = {"at": [0.0, 0.5, 1.0, 1.2, 2.0, 3.2]}

    def changes(_spool: Spool, _stop: threading.Event) -> Batches:
        for at in ticks["at"]:
            clock.now = at
            if at == 1.2:
                spool.put(build_event("epilog", ENV))
                yield set(ADDED)
            else:
                yield set()

    relay(
        spool, sender, log, max_backoff_s=60, stop=threading.Event(), changes=changes, clock=clock
    )
    attempts = [line for line in logged(tmp_path) if line["event"] == "relay.waiting"]
    # 0.0 fails (retry in 1 s); 0.5 waits; 1.0 fails (retry in 2 s); 1.2 is a new event:
    # tried at once, fails (retry in 4 s); 2.0 waits; 3.2 is due and goes through.
    assert [line["retry_s"] for line in attempts] == [1.0, 2.0, 4.0]
    assert sender.sent == []
    assert len(spool.pending()) == 2


def test_the_relay_answers_heartbeats_between_events(spool: Spool, log: HookLog) -> None:
    sender = KeptFakeSender()
    relay(
        spool,
        sender,
        log,
        max_backoff_s=60,
        stop=threading.Event(),
        changes=lambda _s, _e: iter([set(), set(), set(ADDED)]),
    )
    assert sender.idled == 2


@pytest.mark.parametrize(
    ("change", "name", "wakes"),
    [
        (watchfiles.Change.added, "job.started.42-r0.json", True),
        (watchfiles.Change.deleted, "job.started.42-r0.json", False),  # just sent
        (watchfiles.Change.added, ".tmp-job.started.42-r0.json.7", False),
        (watchfiles.Change.added, ".sending-7.job.started.42-r0.json", False),
        (watchfiles.Change.added, ".relay.lock", False),
    ],
)
def test_only_an_event_arriving_under_its_own_name_wakes_the_relay(
    change: watchfiles.Change, name: str, wakes: bool
) -> None:
    assert is_new_event(change, f"/var/spool/slurm-k8s/outbox/{name}") is wakes


def test_the_kernels_watch_wakes_the_relay_when_a_hook_spools(
    spool: Spool, log: HookLog, tmp_path: Path
) -> None:
    sender = KeptFakeSender()
    stop = threading.Event()
    thread = threading.Thread(
        target=relay,
        args=(spool, sender, log),
        kwargs={"max_backoff_s": 60, "stop": stop, "changes": watch_outbox},
    )
    thread.start()
    try:
        env = {
            **ENV,
            "HOOKS_ENV_FILE": str(tmp_path / "none"),
            "HOOKS_SPOOL_DIR": str(spool.directory),
            "HOOKS_LOG_FILE": str(tmp_path / "hooks.log"),
            "AMQP_URL": "amqp://u:p@127.0.0.1:1/",
        }
        # The hook hands over only once the relay holds the node (after its first tick).
        wait_for("the relay to hold the node", lambda: logs(tmp_path, "relay.started"), 10, 0.02)
        assert main(["prolog"], env) == 0
        assert sender.arrived.wait(10), "the relay did not publish the spooled event"
    finally:
        stop.set()
        thread.join(10)
    assert sender.sent == ["job.started"]
    done = [line for line in logged(tmp_path) if line["event"] == "hook.done"]
    assert done[0]["relay"] is True


def test_a_hook_that_hands_over_to_the_relay_never_loads_the_broker_client(
    tmp_path: Path,
) -> None:
    outbox = tmp_path / "outbox"
    env = {
        **ENV,
        "PATH": os.environ["PATH"],
        "HOOKS_ENV_FILE": str(tmp_path / "none"),
        "HOOKS_SPOOL_DIR": str(outbox),
        "HOOKS_LOG_FILE": str(tmp_path / "hooks.log"),
        "AMQP_URL": "amqp://u:p@127.0.0.1:1/",
    }
    probe = (
        "import sys; from services.hooks.__main__ import main; "
        "rc = main(['prolog'], dict(__import__('os').environ)); "
        "print(rc, 'pika' in sys.modules, 'watchfiles' in sys.modules)"
    )
    with Spool(outbox).lock(RELAY_LOCK) as held:
        assert held
        done = subprocess.run(
            [sys.executable, "-c", probe],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parents[4],
        )
    assert done.stdout.split() == ["0", "False", "False"]
    assert [p.name for p in outbox.glob("*.json")] == ["job.started.42-r0.json"]


HOOK = Path(__file__).parents[4] / "slurm" / "hook"


def run_shell_hook(kind: str, tmp_path: Path, env: Mapping[str, str]) -> None:
    """slurm/hook under the name slurmd calls it by, with a bare environment."""
    named = tmp_path / "bin" / kind
    named.parent.mkdir(exist_ok=True)
    if not named.exists():
        named.symlink_to(HOOK)
    subprocess.run(
        [str(named)],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        check=True,
        timeout=30,
    )


def shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **ENV,
        "HOOKS_SPOOL_DIR": str(tmp_path / "outbox"),
        # The Python path, if taken, spools nothing: only the shell's hand-over is seen.
        "SLURMK8S_PYTHON": str(tmp_path / "no-python"),
        **extra,
    }


def test_with_a_relay_the_shell_hook_hands_over_slurmds_environment_without_python(
    spool: Spool, log: HookLog, tmp_path: Path
) -> None:
    spool.directory.mkdir(parents=True)
    with spool.lock(RELAY_LOCK):
        run_shell_hook("prolog", tmp_path, shell_env(tmp_path))
        run_shell_hook("epilog", tmp_path, shell_env(tmp_path))
    handed = sorted(p.name for p in spool.directory.glob("*.env"))
    assert [name.split(".")[:2] for name in handed] == [["epilog", "42"], ["prolog", "42"]]
    assert all((spool.directory / n).stat().st_mode & 0o777 == 0o600 for n in handed)
    os.utime(next(spool.directory.glob("prolog.*")), (1_800_000_000, 1_800_000_000))
    os.utime(next(spool.directory.glob("epilog.*")), (1_800_000_001, 1_800_000_001))

    sender = KeptFakeSender()
    from services.hooks.flushing import flush_once

    assert flush_once(spool, sender, log).sent == 2
    assert sender.sent == ["job.started", "job.ended"]
    assert list(spool.directory.glob("*.env")) == []


def test_the_event_made_from_a_handed_over_environment_is_the_python_hooks(
    spool: Spool, log: HookLog, tmp_path: Path
) -> None:
    from services.hooks.flushing import adopt_environments
    from services.hooks.spool import unpack

    traceparent = f"00-{'a1' * 16}-{'b2' * 8}-01"
    env = {**ENV, "SLURM_JOB_COMMENT": f"slurmk8s-key=ab; traceparent={traceparent}"}
    spool.directory.mkdir(parents=True)
    handed = spool.directory / "prolog.42.77.env"
    handed.write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
    os.utime(handed, (1_800_000_000, 1_800_000_000))
    adopt_environments(spool, log)
    [made] = spool.pending()
    body, headers = unpack(made.path.read_bytes())
    expected = build_event("prolog", env)
    assert json.loads(body)["message_id"] == expected.message_id
    assert json.loads(body)["body"] == json.loads(expected.data)["body"]
    assert json.loads(body)["occurred_at"] == "2027-01-15T08:00:00+00:00"
    assert headers == {"traceparent": traceparent}


@pytest.mark.parametrize(
    ("name", "data", "outcome"),
    [
        # A value is only ever a value: newlines, '=' and other keys' names inside it.
        (
            "prolog.42.1.env",
            b"\0".join(f"{k}={v}".encode() for k, v in ENV.items() if k != "SLURMD_NODENAME")
            + b"\0SLURMD_NODENAME=node1\0SLURM_JOB_COMMENT=x\nSLURM_JOB_UID=0\0",
            "sent",
        ),
        ("prolog.42.2.env", b"\xff\xfe not an environment \0", "bad"),
        ("prolog.42.3.env", b"SLURM_JOB_ID=42\0", "skipped"),  # not run by slurmd
        ("prolog.42.4.env", b"A=" + b"x" * (1 << 20) + b"\0", "bad"),  # oversized
        ("backdoor.42.5.env", b"\0".join(f"{k}={v}".encode() for k, v in ENV.items()), "bad"),
    ],
)
def test_a_handed_over_environment_is_read_as_data_only(
    spool: Spool, log: HookLog, tmp_path: Path, name: str, data: bytes, outcome: str
) -> None:
    from services.hooks.flushing import flush_once

    spool.directory.mkdir(parents=True)
    (spool.directory / name).write_bytes(data)
    sender = KeptFakeSender()
    flush_once(spool, sender, log)
    assert list(spool.directory.glob("*.env")) == []
    quarantined = [p.name for p in (spool.directory / "bad").glob("*")] if outcome == "bad" else []
    assert quarantined == ([name] if outcome == "bad" else [])
    assert sender.sent == (["job.started"] if outcome == "sent" else [])
    if outcome == "skipped":
        assert logs(tmp_path, "event.skipped")


@pytest.mark.parametrize("job_id", ["42; touch /tmp/pwned", "../../etc/x", ""])
def test_a_job_id_that_is_not_digits_never_names_a_file(
    spool: Spool, tmp_path: Path, job_id: str
) -> None:
    spool.directory.mkdir(parents=True)
    with spool.lock(RELAY_LOCK):
        run_shell_hook("prolog", tmp_path, shell_env(tmp_path, SLURM_JOB_ID=job_id))
    assert sorted(p.name for p in spool.directory.iterdir()) == [".relay.lock"]


def test_without_a_relay_the_shell_hook_runs_the_python_hook(spool: Spool, tmp_path: Path) -> None:
    env = shell_env(
        tmp_path,
        SLURMK8S_PYTHON=sys.executable,
        HOOKS_ENV_FILE=str(tmp_path / "none"),
        HOOKS_LOG_FILE=str(tmp_path / "hooks.log"),
        AMQP_URL="amqp://u:p@127.0.0.1:1/",
        PYTHONPATH=str(Path(__file__).parents[4]),
    )
    # The broker is down: a flusher "already running" keeps the hook from starting a real one.
    with spool.lock(FLUSH_LOCK):
        run_shell_hook("prolog", tmp_path, env)
    assert [p.file_name for p in spool.pending()] == ["job.started.42-r0.json"]
    assert list(spool.directory.glob("*.env")) == []


def test_a_handed_over_start_still_goes_before_a_later_end(
    spool: Spool, log: HookLog, tmp_path: Path
) -> None:
    from services.hooks.flushing import flush_once

    spool.directory.mkdir(parents=True)
    handed = spool.directory / "prolog.42.7.env"
    handed.write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in ENV.items()))
    os.utime(handed, (1_700_000_000, 1_700_000_000))  # before now
    spool.put(build_event("epilog", ENV))  # spooled now, by a Python hook
    sender = KeptFakeSender()
    flush_once(spool, sender, log)
    assert sender.sent == ["job.started", "job.ended"]
