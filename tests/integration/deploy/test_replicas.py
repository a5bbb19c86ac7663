"""Three replicas of each queue consumer make no duplicate job, Pod or cleanup; one watcher acts.

A site scales the services by adding consumers to the same queues (k8s/README.md). Here three
validators, three launchers and three collectors consume the lab's queues at once (as host
processes: the queues, not the Pods, are what is under test), beside three watchers on the
one NAS. Six hello files dropped together must give six Slurm jobs (one per file, in
accounting), one Pod per job (a watch sees every Pod the API server adds, also when a
job.started reaches two launchers: the hooks deliver at least once), exactly one finished run
and one summary per job across the collectors; the work must really be shared (more than one replica
of each consumer handled some), and only the watcher holding the NAS lock publishes; when it
stops, one standby takes over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.jobpods import LABEL_JOB_ID, LABEL_MANAGED, MANAGED_BY
from tests.integration.conftest import wait_for
from tests.integration.deploy.conftest import JOBS_NS, REPO, Kubectl, lab_path
from tests.integration.execution.conftest import wait_done

pytestmark = pytest.mark.integration

REPLICAS = 3
FILES = 6
CONSUMERS = ("validator", "launcher", "collector")


@dataclass
class Replica:
    """One ``python -m services.<service>`` process and its JSON log."""

    service: str
    index: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The log's JSON lines (optionally only one event name)."""
        found = []
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and event in (None, record.get("event")):
                    found.append(record)
        return found

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 40 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def replicas(
    require: Callable[[str], None], lab_env: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, list[Replica]]]:
    """Three of each service running against the lab; all stopped afterwards."""
    for component in ("rabbitmq", "slurm", "kubernetes"):
        require(component)
    env = {
        **os.environ,
        **lab_env,
        "PATH": lab_path(lab_env),
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        "COLLECTOR_RECONCILE_INTERVAL": "10",
    }
    running: dict[str, list[Replica]] = {}
    try:
        for service in ("watcher", *CONSUMERS):
            for index in range(REPLICAS):
                log = tmp_path / f"{service}-{index}.log"
                with log.open("wb") as sink:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", f"services.{service}"],
                        cwd=REPO,
                        env=env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                running.setdefault(service, []).append(Replica(service, index, proc, log))
        every = [r for group in running.values() for r in group]

        def all_up() -> bool:
            dead = [r.name for r in every if r.proc.poll() is not None]
            if dead:
                pytest.fail(f"replicas exited at start: {dead}")
            consuming = all(r.events("consuming") for s in CONSUMERS for r in running[s])
            watchers = running["watcher"]
            active = [r for r in watchers if r.events("watcher.configured")]
            standby = [r for r in watchers if r.events("watcher.standby")]
            return consuming and len(active) == 1 and len(standby) == REPLICAS - 1

        wait_for("every replica consuming, one watcher active", all_up, timeout=90)
        yield running
    finally:
        for group in running.values():
            for replica in group:
                replica.stop()


class PodCreations:
    """Every Pod the API server adds in the jobs namespace while it runs: (job id, uid).

    A watch, not a list: a duplicate Pod made and deleted between two lists would be missed.
    """

    def __init__(self, kubeconfig: str) -> None:
        from kubernetes import client

        from shared.kube import api_client

        self._core = client.CoreV1Api(api_client(Path(kubeconfig)))
        self.seen: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            stream = watch.Watch()
            for item in stream.stream(
                self._core.list_namespaced_pod,
                JOBS_NS,
                label_selector=f"{LABEL_MANAGED}={MANAGED_BY}",
                timeout_seconds=5,
                _request_timeout=(5, 30),
            ):
                pod = item["object"]
                self.seen.add((pod.metadata.labels.get(LABEL_JOB_ID, ""), pod.metadata.uid))
                if self._stop.is_set():
                    stream.stop()

    def per_job(self, jobs: set[int]) -> dict[int, set[str]]:
        """Job id → the uids of its Pods."""
        found: dict[int, set[str]] = {job: set() for job in jobs}
        for job, uid in set(self.seen):
            if job.isdigit() and int(job) in found:
                found[int(job)].add(uid)
        return found

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=40)


def _per_job(replicas: list[Replica], event: str, jobs: set[int]) -> dict[int, list[str]]:
    """Job id → the replicas that logged ``event`` for it (a replica once per line)."""
    seen: dict[int, list[str]] = {job: [] for job in jobs}
    for replica in replicas:
        for record in replica.events(event):
            if record.get("job_id") in seen:
                seen[record["job_id"]].append(replica.name)
    return seen


def _finishes(collectors: list[Replica], jobs: set[int]) -> dict[int, list[tuple[str, str]]]:
    """Job id → (replica, via) of every ``run finished`` the collectors logged for it."""
    found: dict[int, list[tuple[str, str]]] = {job: [] for job in jobs}
    for collector in collectors:
        for record in collector.events("run finished"):
            if record.get("job_id") in found:
                found[record["job_id"]].append((collector.name, record.get("via", "")))
    return found


def _clean_up(nas: Path, job_ids: list[int], names: list[str]) -> None:
    """Cancel the jobs (if still there) and remove their files from the NAS."""
    submit_dir = nas / "slurm-jobs" / "submit"
    submitted_dir = nas / "slurm-jobs" / "submitted"
    if job_ids:
        subprocess.run(
            ["scancel", *map(str, job_ids)], capture_output=True, timeout=30, check=False
        )
    for job_id in job_ids:
        for leftover in (f"{job_id}.out", f"{job_id}.out.summary.json"):
            (nas / "results" / leftover).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            (nas / "results" / str(job_id)).rmdir()
    for name in names:
        for leftover in (f"{name}.sh", f"{name}.sh.receipt.json"):
            (submitted_dir / leftover).unlink(missing_ok=True)
            (submit_dir / leftover).unlink(missing_ok=True)


def test_three_replicas_each_make_no_duplicates_and_one_watcher_acts(
    replicas: dict[str, list[Replica]],
    run_as: Callable[..., Any],
    lab_env: dict[str, str],
    kubectl: Kubectl,
) -> None:
    nas = Path(lab_env["NAS_ROOT"])
    submit_dir = nas / "slurm-jobs" / "submit"
    submitted_dir = nas / "slurm-jobs" / "submitted"
    tag = uuid.uuid4().hex[:8]
    names = [f"rep-{tag}-{i}" for i in range(FILES)]
    hello = (REPO / "examples" / "hello.sh").read_text()
    job_ids: list[int] = []
    pods = PodCreations(lab_env["KUBECONFIG"])
    try:
        for name in names:
            script = hello.replace("--job-name=hello", f"--job-name={name}")
            run_as(
                "alice",
                ["sh", "-c", 'cat > "$0"', str(submit_dir / f"{name}.sh")],
                input=script,
                check=True,
            )
        receipts = [submitted_dir / f"{name}.sh.receipt.json" for name in names]
        wait_for("every file's receipt", lambda: all(r.is_file() for r in receipts), timeout=150)
        job_ids = [int(json.loads(r.read_text())["job_id"]) for r in receipts]
        assert len(set(job_ids)) == FILES
        for job_id in job_ids:
            assert wait_done(job_id) == ["COMPLETED", "0:0"]
        jobs = set(job_ids)

        # One Slurm job per file: every job accounting knows under these names is a receipt's.
        accounted = subprocess.run(
            [
                "sacct",
                "-a",
                "-X",
                "-n",
                "-P",
                "--name",
                ",".join(names),
                "-S",
                "now-1hour",
                "--format=JobID,JobName",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
        per_name = Counter(line.split("|")[1] for line in accounted)
        assert per_name == Counter(names), f"sacct: {accounted}"

        results = nas / "results"
        wait_for(
            "every summary",
            lambda: all((results / f"{j}.out.summary.json").is_file() for j in jobs),
            timeout=120,
        )
        selector = "slurm-k8s.io/job-id in (" + ",".join(map(str, jobs)) + ")"
        wait_for(
            "no run object left",
            lambda: (
                not kubectl(
                    "get",
                    "pods,serviceaccounts,configmaps",
                    "-n",
                    JOBS_NS,
                    "-l",
                    selector,
                    "-o",
                    "name",
                ).stdout.strip()
            ),
            timeout=120,
        )

        one_pod = {job: uids for job, uids in pods.per_job(jobs).items() if len(uids) != 1}
        assert not one_pod, f"not exactly one Pod per job: {one_pod}"

        published = [
            (w.name, r["path"])
            for w in replicas["watcher"]
            for r in w.events("file.published")
            if tag in r.get("path", "")
        ]
        assert sorted(p for _, p in published) == sorted(str(submit_dir / f"{n}.sh") for n in names)
        assert len({w for w, _ in published}) == 1, f"more than one watcher published: {published}"

        filed = _per_job(replicas["validator"], "job file filed", jobs)
        launched = _per_job(replicas["launcher"], "pod launched", jobs)
        finished = {
            job: [who for who, _ in f] for job, f in _finishes(replicas["collector"], jobs).items()
        }
        duplicates = {job: who for job, who in filed.items() if len(who) != 1}
        assert not duplicates, f"filed: not exactly once per job: {duplicates}"
        # job.started and job.ended are delivered at least once (a hook dying between the
        # broker's confirm and removing its spooled file sends it again): a second launcher
        # adopts the first one's objects (409, same labels); one Pod per job is what the
        # watch above checks.
        assert all(launched.values()), f"pod launched: missing for {launched}"
        assert all(finished.values()), f"run finished: missing for {finished}"
        for what, seen in (("filed", filed), ("pod launched", launched), ("finished", finished)):
            shared = {who[0] for who in seen.values()}
            assert len(shared) > 1, f"{what}: one replica did all the work ({shared})"
        summaries = [
            r
            for c in replicas["collector"]
            for r in c.events("run finished")
            if r.get("job_id") in jobs and "summary written" in r.get("notes", [])
        ]
        assert len(summaries) == FILES

        # The NAS lock hands over: stop the active watcher, exactly one standby takes over.
        (active,) = [w for w in replicas["watcher"] if w.events("watcher.configured")]
        active.stop()
        others = [w for w in replicas["watcher"] if w is not active]
        wait_for(
            "a standby watcher to take over",
            lambda: [w.name for w in others if w.events("watcher.configured")],
            timeout=60,
        )
        assert len([w for w in others if w.events("watcher.configured")]) == 1

        # Once: a hook claims a spooled event before sending it (no second job.ended from
        # hooks running together), and a collector claims a run before finishing it (a
        # job.ended that still arrives twice, or a sweep meeting the epilog's finish, is
        # left to the claim's holder). Before both, a third of the runs were finished twice.
        again = {job: f for job, f in _finishes(replicas["collector"], jobs).items() if len(f) > 1}
        assert not again, f"runs finished more than once: {again}"
    finally:
        pods.close()
        _clean_up(nas, job_ids, names)
