"""The chaos run (issue 9): job files through the whole system while every part of it fails.

``make chaos`` (``python -m tests.chaos``, 200 files) and, in a short form, the integration
test ``tests/integration/execution/test_chaos.py`` (``make test``). Both need the lab and,
because they restart shared daemons, must run alone: under the lab lock.

What happens, in order:

1. Job files are written for alice and bob: valid ones run a real Pod (alpine, a few seconds
   of ``sleep`` or none), invalid ones must be refused at the door (no ``#K8S_IMAGE``, an
   identity option, too many CPUs, binary content).
2. They are dropped into ``submit/`` in batches; between batches one fault each: SIGKILL of
   the watcher, the validator, the launcher and the collector (each restarted at once, as a
   supervisor would), and a restart of RabbitMQ, slurmctld and the API server
   (``lab/restart.sh``). Every daemon is brought back in a ``finally``.
3. The run drains (bounded): no file left in ``submit/``, no job of the run pending or
   running, no per-job object left, the work queues empty.
4. It counts, prints the counts and checks: every file in exactly one of ``submitted/`` and
   ``failed/`` (and the expected one); exactly one Slurm job per accepted file (its
   submission key in the job's comment) and none for a refused one; every job that ran has
   its complete output (one footer) and its summary, and a valid job completed; no Pod,
   ConfigMap, Secret, ServiceAccount, Role or RoleBinding of the run's jobs left; no message
   ready or unacknowledged in a work queue; no new message in a dead-letter queue; the node
   not drained.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from shared.broker import ALL_QUEUES
from shared.jobpods import JOB_NAMESPACE, LABEL_JOB_ID, LABEL_MANAGED, MANAGED_BY
from shared.kube import api_client
from shared.slurmctl import COMMENT_PREFIX
from tests.integration.conftest import _parse_exports, wait_for
from tests.integration.execution.conftest import Services

REPO = Path(__file__).resolve().parents[1]
VHOST = "slurm-k8s"
USERS = ("alice", "bob")
SERVICES = ("watcher", "validator", "launcher", "collector")
DAEMONS = ("rabbitmq", "slurmctld", "kube-apiserver")
FOOTER = "[slurm-k8s] outcome:"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
KINDS: dict[str, tuple[float, str]] = {
    # kind: (share of the files, the door's verdict)
    "sleep": (0.35, "submitted"),
    "quick": (0.25, "submitted"),
    "no-image": (0.12, "failed"),
    "identity": (0.10, "failed"),
    "cpus": (0.09, "failed"),
    "binary": (0.09, "failed"),
}


@dataclass(frozen=True)
class JobFile:
    """One dropped file and what the door must answer."""

    name: str
    user: str
    kind: str
    content: bytes

    @property
    def expected(self) -> str:
        return KINDS[self.kind][1]


@dataclass
class Chaos:
    """One chaos run against the lab.

    Args:
        fleet: the services (started or not); the run starts, kills and restarts them.
        env: the lab's settings (``lab/env.sh``).
        files: how many job files.
        drain_s: how long the system may take to answer everything after the last fault.
        seed: for the mix of files.
        say: where progress and the counts go.
    """

    fleet: Services
    env: dict[str, str]
    files: int = 200
    drain_s: float = 1800
    seed: int = 9
    say: Callable[[str], None] = print
    tag: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:6]}")
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    faults: list[str] = field(default_factory=list)

    @property
    def nas(self) -> Path:
        return Path(self.env.get("NAS_ROOT", "/mnt/test-k8s"))

    @property
    def jobs_dir(self) -> Path:
        return self.nas / "slurm-jobs"

    def run(self) -> list[str]:
        """The whole run; returns the failed checks (empty: the system held)."""
        plan = self.plan()
        dead_before = dead_letters()
        for name in SERVICES:
            if name not in self.fleet.procs:
                self.fleet.start(name)
        batches = [plan[i :: len(FAULT_ORDER) + 1] for i in range(len(FAULT_ORDER) + 1)]
        began = time.monotonic()
        with self.daemons_restored():
            for batch, fault in zip(batches, [*FAULT_ORDER, None], strict=True):
                self.drop(batch)
                # The pace of the run, not a wait for a condition: faults land while the
                # batch just dropped is on its way through the system.
                time.sleep(3)
                if fault is not None:
                    self.inject(fault)
            self.say(f"{len(plan)} files dropped, {len(self.faults)} faults in "
                     f"{time.monotonic() - began:.0f} s; draining")  # fmt: skip
            self.drain(plan)
        self.say(f"drained after {time.monotonic() - began:.0f} s")
        return self.check(plan, dead_before)

    # --- the files ---------------------------------------------------------------------------

    def plan(self) -> list[JobFile]:
        rng = random.Random(self.seed)
        kinds = list(KINDS)
        weights = [KINDS[k][0] for k in kinds]
        plan = []
        for i in range(self.files):
            kind = kinds[i] if i < len(kinds) else rng.choices(kinds, weights)[0]
            user = USERS[i % 2]
            name = f"{self.tag}-{i:03d}.sh"
            plan.append(JobFile(name, user, kind, self.script(name, kind, rng)))
        return plan

    def script(self, name: str, kind: str, rng: random.Random) -> bytes:
        image = f"{self.env.get('REGISTRY', 'nas-hub.local:5407')}/alpine:latest"
        head = [
            "#!/bin/sh",
            f"#SBATCH --job-name={name}",
            "#SBATCH --mem=64M",
            "#SBATCH --time=5",
            f"#SBATCH --output={self.nas}/results/{self.tag}-%j.out",
        ]
        body = [f"echo chaos-marker {name}"]
        if kind == "binary":
            return b"\x7fELF\x02\x01\x01\x00" + bytes(rng.randrange(256) for _ in range(512))
        if kind == "sleep":
            body.insert(0, f"sleep {rng.randint(2, 4)}")
        if kind == "identity":
            head.append("#SBATCH --uid=0")
        if kind == "cpus":
            head.append("#SBATCH --cpus-per-task=64")
        if kind != "no-image":
            head.append(f"#K8S_IMAGE={image}")
        return ("\n".join(head + body) + "\n").encode()

    def drop(self, batch: list[JobFile]) -> None:
        """Write each file as its user, renamed into place (a .part name is never a job)."""
        for job in batch:
            target = self.jobs_dir / "submit" / job.name
            subprocess.run(
                ["runuser", "-u", job.user, "--", "sh", "-c", RENAMED_IN, str(target)],
                input=job.content, check=True, capture_output=True, timeout=60, cwd="/tmp",
            )  # fmt: skip

    # --- the faults --------------------------------------------------------------------------

    def inject(self, fault: str) -> None:
        self.say(f"fault: {fault}")
        self.faults.append(fault)
        what, _, name = fault.partition(" ")
        if what == "kill":
            proc = self.fleet.procs.pop(name)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            self.fleet.start(name)
        else:
            restart(name)

    @contextmanager
    def daemons_restored(self) -> Iterator[None]:
        """Whatever happens, every daemon answers again at the end (or the run says so)."""
        try:
            yield
        finally:
            for daemon in DAEMONS:
                if not daemon_up(daemon):
                    self.say(f"{daemon} is down after the run: restarting it")
                    restart(daemon)

    # --- draining ----------------------------------------------------------------------------

    def drain(self, plan: list[JobFile]) -> None:
        deadline = time.monotonic() + self.drain_s

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        submit = self.jobs_dir / "submit"
        wait_for(
            "every file to leave submit/",
            lambda: not any((submit / j.name).exists() for j in plan),
            left(),
            interval=2,
        )
        wait_for("the run's jobs to end", lambda: not self.live_jobs(), left(), interval=3)
        wait_for("the run's objects to go", lambda: not self.objects_left(), left(), interval=3)
        wait_for("the work queues to empty", lambda: not busy_queues(), left(), interval=2)

    def live_jobs(self) -> list[str]:
        """The run's jobs slurmctld still has pending or running (a failed query counts)."""
        done = subprocess.run(
            ["squeue", "-h", "-u", ",".join(USERS), "-o", "%i|%j|%T"],
            capture_output=True, text=True, errors="replace", timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return [f"squeue: {done.stderr.strip()}"]
        return [line for line in done.stdout.splitlines() if f"|{self.tag}-" in line]

    def run_jobs(self) -> dict[int, dict[str, str]]:
        """Accounting's record of every job of this run (by its name), by id."""
        fields = ["JobIDRaw", "JobName", "State", "ExitCode", "Start", "Comment"]
        out = run(["sacct", "-X", "-n", "-P", "-S", self.started_at, "-u", ",".join(USERS),
                   f"--format={','.join(fields)}"])  # fmt: skip
        jobs: dict[int, dict[str, str]] = {}
        for line in out.splitlines():
            cols = line.split("|", len(fields) - 1)
            if len(cols) == len(fields) and cols[1].startswith(self.tag) and cols[0].isdigit():
                jobs[int(cols[0])] = dict(zip(fields, cols, strict=True))
        return jobs

    def objects_left(self) -> list[str]:
        """The run's jobs' objects in the jobs namespace (a failed listing counts)."""
        ours = {str(j) for j in self.run_jobs()}
        try:
            objects = labelled_objects()
        except Exception as exc:  # the API server may still be coming back
            return [f"listing failed: {exc!r}"]
        return [f"{kind}/{name}" for kind, name, job in objects if job in ours]

    # --- the checks --------------------------------------------------------------------------

    def check(self, plan: list[JobFile], dead_before: dict[str, int]) -> list[str]:
        failures: list[str] = []
        jobs = self.run_jobs()
        verdicts, keys = self.check_files(plan, failures)
        self.check_keys(keys, jobs, failures)
        failures += self.check_outputs(plan, jobs)
        ours = {str(j) for j in jobs}
        left = [f"{kind}/{name}" for kind, name, job in labelled_objects() if job in ours]
        if left:
            failures.append(f"per-job objects left: {left}")
        busy = busy_queues()
        if busy:
            failures.append(f"messages ready or unacknowledged: {busy}")
        dead_after = dead_letters()
        new_dead = {q: n - dead_before.get(q, 0) for q, n in dead_after.items()
                    if n > dead_before.get(q, 0)}  # fmt: skip
        if new_dead:
            failures.append(f"new dead-lettered messages (unexplained): {new_dead}")
        node = node_state(self.env.get("LAB_NODE", "vm"))
        if node.startswith(("drain", "down", "fail")):
            failures.append(f"node drained: {node}")
        states = Counter(info["State"].split(" ")[0] for info in jobs.values())
        self.say(
            f"counts: files {len(plan)} {dict(verdicts)}; kinds "
            f"{dict(Counter(j.kind for j in plan))}; Slurm jobs {len(jobs)} {dict(states)}; "
            f"faults {self.faults}; objects left {len(left)}; queues {busy or 'empty'}; "
            f"dead letters {dead_after}; node {node}"
        )
        return failures

    def check_files(
        self, plan: list[JobFile], failures: list[str]
    ) -> tuple[Counter[str], dict[str, str]]:
        """Each file in exactly one folder, the expected one; its receipt's key by file name."""
        verdicts = Counter[str]()
        keys: dict[str, str] = {}
        for job in plan:
            places = self.places(job)
            verdicts["+".join(places) or "nowhere"] += 1
            if len(places) != 1:
                failures.append(f"{job.name}: in {places or 'no folder'}, not exactly one")
            elif places[0] != job.expected:
                failures.append(f"{job.name} ({job.kind}): {places[0]}, expected {job.expected}")
            receipt = self.jobs_dir / "submitted" / f"{job.name}.receipt.json"
            if receipt.is_file():
                keys[json.loads(receipt.read_text())["submission_key"]] = job.name
        return verdicts, keys

    @staticmethod
    def check_keys(
        keys: dict[str, str], jobs: dict[int, dict[str, str]], failures: list[str]
    ) -> None:
        """Exactly one Slurm job per receipt's key, and no job without a receipt."""
        by_key = Counter(
            info["Comment"].split(";")[0].strip().removeprefix(COMMENT_PREFIX)
            for info in jobs.values()
        )
        for key, name in keys.items():
            if by_key[key] != 1:
                failures.append(f"{name}: {by_key[key]} Slurm jobs for its key, not one")
        for key, count in by_key.items():
            if key not in keys:
                failures.append(f"{count} Slurm job(s) with key {key!r} and no receipt")

    def places(self, job: JobFile) -> list[str]:
        found = []
        if (self.jobs_dir / "submit" / job.name).exists():
            found.append("submit")
        for folder in ("submitted", "failed"):
            if (self.jobs_dir / folder / job.name).exists():
                found.append(folder)
        return found

    def check_outputs(self, plan: list[JobFile], jobs: dict[int, dict[str, str]]) -> list[str]:
        failures = []
        by_name = {j.name: j for j in plan}
        for job_id, info in sorted(jobs.items()):
            state = info["State"].split(" ")[0]
            name = info["JobName"]
            if state not in FINAL:
                failures.append(f"job {job_id} ({name}) is {state}, not finished")
                continue
            if info["Start"] in ("", "None", "Unknown"):
                continue  # never ran: nothing to complete
            output = self.nas / "results" / f"{self.tag}-{job_id}.out"
            text = output.read_text(errors="replace") if output.is_file() else ""
            footers = text.count(FOOTER)
            summary = output.with_name(output.name + ".summary.json")
            if footers != 1 or not summary.is_file():
                failures.append(
                    f"job {job_id} ({name}, {state}): {footers} footer(s), summary "
                    f"{'present' if summary.is_file() else 'missing'}"
                )
            elif by_name.get(name) and (state != "COMPLETED" or f"chaos-marker {name}" not in text):
                last = text.strip().splitlines()[-1] if text.strip() else ""
                failures.append(f"job {job_id} ({name}) did not complete: {state}; {last}")
        return failures


RENAMED_IN = 'cat > "$0.part" && mv "$0.part" "$0"'
"""Write stdin to the file named $0 under a name the watcher ignores, then rename it in."""

FAULT_ORDER = (
    "kill watcher",
    "restart rabbitmq",
    "kill validator",
    "restart slurmctld",
    "kill launcher",
    "restart kube-apiserver",
    "kill collector",
)
"""Each service SIGKILLed once, each shared daemon restarted once, interleaved."""


# --- the lab's state ----------------------------------------------------------------------


def run(argv: list[str], timeout: float = 60) -> str:
    """A command's stdout ("" if it failed: a daemon may be restarting)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 else ""


def restart(daemon: str) -> None:
    """``lab/restart.sh``: stop one shared daemon and start it again, waiting until it answers."""
    done = subprocess.run(
        ["bash", str(REPO / "lab" / "restart.sh"), daemon],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"lab/restart.sh {daemon} failed: {done.stderr[-2000:]}")


def daemon_up(daemon: str) -> bool:
    checks = {
        "rabbitmq": ["rabbitmqctl", "-q", "status"],
        "slurmctld": ["scontrol", "ping"],
    }
    if daemon == "kube-apiserver":
        try:
            labelled_objects()
        except Exception:  # any failure to list means "not answering" here
            return False
        return True
    return bool(run(checks[daemon], timeout=30))


def queue_counts() -> dict[str, tuple[int, int]]:
    """Queue → (ready, unacknowledged) in the services' vhost ({} if RabbitMQ is down)."""
    out = run(["rabbitmqctl", "-q", "-p", VHOST, "list_queues", "name", "messages",
               "messages_unacknowledged"])  # fmt: skip
    counts: dict[str, tuple[int, int]] = {}
    for line in out.splitlines():
        cols = line.split("\t")
        if len(cols) == 3 and cols[1].isdigit() and cols[2].isdigit():
            counts[cols[0]] = (int(cols[1]), int(cols[2]))
    return counts


def busy_queues() -> dict[str, tuple[int, int]]:
    """Work and retry queues holding a message, ready or unacknowledged."""
    work = {q.name for q in ALL_QUEUES} | {q.retry_queue for q in ALL_QUEUES}
    counts = queue_counts()
    if not counts:
        return {"rabbitmq": (-1, -1)}
    return {q: n for q, n in counts.items() if q in work and n != (0, 0)}


def dead_letters() -> dict[str, int]:
    counts = queue_counts()
    return {q.dead_queue: counts.get(q.dead_queue, (0, 0))[0] for q in ALL_QUEUES}


def labelled_objects() -> list[tuple[str, str, str]]:
    """(kind, name, job id) of every object slurm-k8s made in the jobs namespace.

    Raises:
        ApiException, urllib3 errors: the API server does not answer (a drain keeps polling).
    """
    api = api_client(Path(os.environ["KUBECONFIG"]))
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    selector = f"{LABEL_MANAGED}={MANAGED_BY}"
    listings: dict[str, Callable[..., Any]] = {
        "Pod": core.list_namespaced_pod,
        "ConfigMap": core.list_namespaced_config_map,
        "Secret": core.list_namespaced_secret,
        "ServiceAccount": core.list_namespaced_service_account,
        "Role": rbac.list_namespaced_role,
        "RoleBinding": rbac.list_namespaced_role_binding,
    }
    found = []
    for kind, listing in listings.items():
        for item in listing(JOB_NAMESPACE, label_selector=selector, _request_timeout=30).items:
            labels = item.metadata.labels or {}
            found.append((kind, item.metadata.name, labels.get(LABEL_JOB_ID, "")))
    return found


def node_state(node: str) -> str:
    return run(["sinfo", "-h", "-N", "-n", node, "-o", "%T %E"]).strip()


# --- make chaos ---------------------------------------------------------------------------


def lab_settings() -> dict[str, str]:
    """The lab's exports, as the tests read them, over this process's environment."""
    exports = _parse_exports(run(["bash", str(REPO / "lab" / "env.sh")]))
    return {**exports, **{k: v for k, v in os.environ.items() if k in exports}}


def fleet_for(env: dict[str, str]) -> Services:
    """The four services with the execution tests' settings (short reconcile bounds)."""
    subprocess.run(["bash", str(REPO / "lab" / "slurm" / "install-hooks.sh")],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    service_env = {
        **os.environ, **env, "LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1",
        "COLLECTOR_RECONCILE_INTERVAL": "10", "COLLECTOR_RELAUNCH_AFTER": "10",
        "COLLECTOR_STALE_FILE_AFTER": "30",
    }  # fmt: skip
    return Services({}, service_env, {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--drain", type=float, default=1800, help="seconds")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args(argv)
    env = lab_settings()
    os.environ.update(env)
    fleet = fleet_for(env)
    chaos = Chaos(fleet, env, files=args.files, drain_s=args.drain, seed=args.seed)
    print(f"chaos run {chaos.tag}: {args.files} files, logs in {Path(env.get('LAB_LOG', '/tmp'))}")
    try:
        failures = chaos.run()
    except BaseException as exc:  # pytest's Failed (a drain timeout) is a BaseException
        failures = [f"the run did not finish: {exc}"]
    finally:
        for name in list(fleet.procs):
            fleet.stop(name)
    for failure in failures:
        print(f"FAIL {failure}")
    print("chaos: OK" if not failures else f"chaos: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
