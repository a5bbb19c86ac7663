"""``make bench``: slurm-k8s side by side with the raw tools and the seed's naive door (issue 8).

    source <(make -s lab-env); python bench/run.py [--budget-s 900] [--quick] [--phases …]

On the lab (``make lab`` has run). Starts this checkout's watcher and validator on a throwaway
RabbitMQ vhost and a private NAS tree (``<NAS>/.bench-nas-<id>``, ``home/<user>`` linking to
the real homes; as ``bench/nas_huge_file.py`` does), and the launcher and collector on the lab's
vhost (the prolog publishes there), stops them all at the end. Each figure is measured in the
same run as its baseline, a small honest script beside this one:

* ``naive_loop.sh``: the seed's inotifywait loop (close_write/moved_to → shebang and
  ``#K8S_IMAGE`` check → sbatch as the owner → mv);
* ``raw_sbatch.sh``: a user's serial loop of plain sbatch;
* ``raw_pod.py``: a Pod made from a connected Python client, watched until it runs (a plain
  one, and one with a job Pod's volumes);
* ``kubectl_pod.sh``: ``kubectl apply`` + ``kubectl wait`` of the seed's Pod (the NAS mounted,
  as the seed's prolog did; a plain Pod is timed too), ``kubectl delete --wait`` of a Pod that
  has ended, and the seed's end: ``kubectl wait`` for the Pod's terminal phase, then
  ``kubectl delete --wait``, timed from the container's exit like ours.

Submission figures use ``--hold`` jobs (nothing runs); every phase cancels its jobs and deletes
its files. Sizes the issue asks for that do not fit the time budget on a 2-core machine are
scaled down; the output and the JSON say so. Writes ``bench/results/latest.json`` and
``bench/results/latest.png`` (git-ignored). Timings are figures to read, never test assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from nas_huge_file import make_tree, make_vhost  # noqa: E402
from raw_pod import client, create_and_wait, manifest, seed_pod  # noqa: E402

USER = "alice"
FRESH_USER = "bob"
"""The user beside whom ``USER``'s history is measured: a lab account the bench makes no history
for (the tests give it a few hundred jobs at most)."""
IMAGE = f"{os.environ.get('REGISTRY', 'nas-hub.local:5407')}/alpine:latest"
NAMESPACE = "slurmk8s-bench"
PARTITION = "slurmk8s-bench"
"""A hidden partition whose time limit no job of the run fits: its jobs wait, eligible, never run.

Accounting (``sacct -S``) lists only jobs that became eligible, so held jobs never make history;
these do, and are cancelled at once. Created for the run, deleted at its end."""
JOB_NAMESPACE = "slurm-jobs"
ISSUE_SIZES = {"burst_large": 1000, "burst_small": 100, "history_jobs": 20000, "e2e_jobs": 200}
HISTORY_JOB = (
    "#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --partition={partition}\n#SBATCH -t 10\ntrue\n"
)

GOALS: dict[str, tuple[str, float | None]] = {
    "drop_ratio_vs_naive": ("<=", 2.0),
    "burst_ratio_vs_raw_sbatch": ("<=", 1.0),
    "burst_1000_vs_100_per_file_ratio": ("<=", 1.2),
    "history_growth_ratio": ("<=", 1.2),
    "start_to_running_ratio_vs_raw_pod": ("<=", 1.5),
    "start_to_running_ratio_vs_raw_pod_job_volumes": ("<=", 1.5),
    "start_to_running_ratio_vs_kubectl": ("<=", 1.0),
    "end_to_cleaned_ratio_vs_kubectl_delete": ("<=", 1.5),
    "end_to_cleaned_ratio_vs_seed_end": ("<=", 1.0),
    "burst_ratio_floor_all_cores_busy": ("report", None),
    "e2e_jobs_per_min_ratio_vs_plain_slurm": ("report", None),
    "start_to_running_busy_vs_short_queue_ratio": ("report", None),
    "end_to_cleaned_busy_vs_short_queue_ratio": ("report", None),
    "runner_rss_mb": ("<=", 30.0),
    "max_service_rss_mb": ("<=", 100.0),
}


def say(text: str) -> None:
    """Progress on stderr, so stdout keeps the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def p50(values: list[float]) -> float | None:
    """The median, or None without data."""
    return statistics.median(values) if values else None


def p95(values: list[float]) -> float | None:
    """The 95th percentile (nearest rank), or None without data."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def ratio(ours: float | None, base: float | None) -> float | None:
    """ours / base, None when either is missing."""
    if ours is None or not base:
        return None
    return ours / base


def per_file(burst: dict[str, Any]) -> float | None:
    """Seconds per accepted file of a burst (None without one)."""
    if not burst.get("files") or burst.get("seconds") is None:
        return None
    return float(burst["seconds"]) / int(burst["files"])


def busy_core_s() -> float:
    """Core-seconds this machine has spent running anything since boot (``/proc/stat``).

    Every process counts (services, sbatch, slurmctld, RabbitMQ, the kernel, the lab's
    Kubernetes): a burst's share of the machine is the difference over its run. Idle, I/O wait
    and time stolen by the hypervisor are not work done here.
    """
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


PF_KTHREAD = 0x00200000
"""``/proc/<pid>/stat`` flags bit of a kernel thread (include/linux/sched.h)."""
SHORT_LIVED = "came and went (sbatch, setpriv, lua's checks), interrupts"
"""What the machine's busy time holds beyond the processes seen at both ends of a burst."""


def process_name(stat_line: str, cmdline: bytes) -> str:
    """What a process is, for the CPU split: our services by their module, RabbitMQ by name,
    kernel threads as one, anything else by its command name.

    The command name sits between the first "(" and the last ")": it is the process's own
    choice (``prctl``) and may hold spaces and parentheses.
    """
    comm = stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]
    flags = int(stat_line[stat_line.rindex(")") + 2 :].split()[6])
    args = cmdline.split(b"\0")
    if b"-m" in args[:-1] and args[args.index(b"-m") + 1].startswith(b"services."):
        return args[args.index(b"-m") + 1].decode(errors="replace").removeprefix("services.")
    if flags & PF_KTHREAD:
        return "kernel threads"
    return "rabbitmq" if comm == "beam.smp" else comm


def process_cpu_s() -> dict[tuple[int, int], tuple[str, float]]:
    """Every process's CPU so far (user + system, core-seconds), by (pid, start time) so a
    reused pid is a new process, with :func:`process_name`'s name."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[tuple[int, int], tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            line = Path(entry.path, "stat").read_text(errors="replace")
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue  # gone since the listing
        fields = line[line.rindex(")") + 2 :].split()
        user, system, start = int(fields[11]), int(fields[12]), int(fields[19])
        found[(int(entry.name), start)] = (process_name(line, cmdline), (user + system) / tick)
    return found


def cpu_by_process(
    before: dict[tuple[int, int], tuple[str, float]],
    after: dict[tuple[int, int], tuple[str, float]],
    busy_s: float,
) -> dict[str, float]:
    """Core-seconds each kind of process spent between two :func:`process_cpu_s` snapshots.

    A process gone by ``after`` (sbatch, setpriv) has nothing to read there: the machine's
    busy time (:func:`busy_core_s` over the same span) less everything read is shown as
    :data:`SHORT_LIVED`, as are interrupts, which no process is charged with.
    """
    spent: dict[str, float] = {}
    for key, (name, cpu) in after.items():
        spent[name] = spent.get(name, 0.0) + cpu - before.get(key, (name, 0.0))[1]
    spent[SHORT_LIVED] = busy_s - sum(spent.values())
    return {k: v for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v > 0}


def cpu_split_rows(burst: dict[str, Any], shown: int = 6) -> list[tuple[str, str, str]]:
    """(process, ours, raw loop) in ms per file: the ``shown`` largest of ours, the rest as
    one line, then the machine's total; empty without a split."""
    ours = burst.get("cpu_by_process_s") or {}
    raw = burst.get("raw_sbatch_cpu_by_process_s") or {}
    files = burst.get("files")
    if not ours or not files:
        return []

    def ms(value: float) -> str:
        return f"{value / files * 1000:.1f}"

    top = sorted(ours, key=lambda k: -ours[k])[:shown]
    rest = [k for k in {**ours, **raw} if k not in top]
    rows = [(name, ms(ours[name]), ms(raw.get(name, 0.0))) for name in top]
    rows.append(
        ("everything else", ms(sum(ours.get(k, 0.0) for k in rest)),
         ms(sum(raw.get(k, 0.0) for k in rest)))
    )  # fmt: skip
    rows.append(("all (machine busy time)", ms(sum(ours.values())), ms(sum(raw.values()))))
    return rows


def burst_floor(burst: dict[str, Any], cores: int) -> float | None:
    """The burst ratio this run's CPU allows at best: ours' machine CPU per file spread over
    every core, against the raw loop's wall time per job (None without both)."""
    if not burst.get("cpu_s") or not burst.get("files") or not burst.get("raw_sbatch_s"):
        return None
    return (burst["cpu_s"] / cores) / burst["raw_sbatch_s"]


def account(user: str) -> tuple[int, int]:
    """uid, gid of a lab user."""
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def drop(path: Path, text: str, uid: int, gid: int) -> None:
    """Write a job file the way ``cp`` does (one open, write, close), owned by the user."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, text.encode())
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def held_script(name: str, *, k8s: bool = True) -> str:
    """A slurm-k8s job that never runs (held); without ``k8s`` a plain Slurm job like it."""
    return (
        "#!/bin/bash\n"
        f"#SBATCH --job-name={name}\n"
        "#SBATCH --hold\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=256M\n"
        "#SBATCH --output=/dev/null\n"
        + (f"#K8S_IMAGE={IMAGE}\n" if k8s else "")
        + 'echo "Hello from Slurm-K8s!"\n'
    )


def running_script(name: str, seconds: int, *, k8s: bool = True) -> str:
    """A job that runs ``sleep seconds`` (in a Pod when ``k8s``), output in results/."""
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=256M",
        f"#SBATCH --output=/mnt/test-k8s/results/{name}-%j.out",
    ]
    if k8s:
        lines.append(f"#K8S_IMAGE={IMAGE}")
    return "\n".join([*lines, f"sleep {seconds}", ""])


def scancel_name(name: str) -> None:
    """Cancel every job of that name (the bench's jobs carry the run's id in their names)."""
    subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=60, check=False)


def job_headroom() -> int:
    """How many more jobs slurmctld can hold now (MaxJobCount minus the jobs it holds)."""
    config = subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    limit = 10000
    for line in config.splitlines():
        if line.startswith("MaxJobCount"):
            limit = int(line.split("=")[1].strip())
    return limit - jobs_in_slurmctld()


def squeue_ids(name: str) -> list[int]:
    """Ids of the jobs of that name slurmctld still lists as not finished."""
    out = subprocess.run(
        ["squeue", "-h", f"--name={name}", "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def jobs_in_slurmctld() -> int:
    """How many jobs slurmctld holds, finished ones kept for MinJobAge included."""
    out = subprocess.run(
        ["squeue", "-h", "--states=all", "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    return len(out.split())


def squeue_state(job_id: int) -> str:
    """squeue's state of one job ("" when not listed)."""
    out = subprocess.run(
        ["squeue", "-h", "-j", str(job_id), "-o", "%T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    return out.strip()


def history_size(user: str) -> tuple[int, float]:
    """Jobs in the user's accounting over the lookback (7 days), and the query's time."""
    started = time.monotonic()
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--format=JobID,Comment", "-u", user, "-S", "now-7days"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    return len(out.splitlines()), time.monotonic() - started


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def pids_matching(needle: bytes) -> list[int]:
    """Processes whose command line contains ``needle``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            if needle in Path(entry.path, "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


class Sampler(threading.Thread):
    """Samples the services' RSS every 0.5 s, and the runners' (one per running job)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.services: dict[str, int] = {}
        self.max_rss: dict[str, float] = {}
        self.idle_rss: dict[str, float] = {}
        self.runner_max = 0.0
        self.stepd_max = 0.0
        self.watch_runners = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            for name, pid in list(self.services.items()):
                value = rss_mb(pid)
                if value is not None:
                    self.max_rss[name] = max(self.max_rss.get(name, 0.0), value)
            if self.watch_runners.is_set():
                for pid in pids_matching(b"-m\x00services.runner"):
                    self.runner_max = max(self.runner_max, rss_mb(pid) or 0.0)
                for pid in pids_matching(b".batch]"):
                    self.stepd_max = max(self.stepd_max, rss_mb(pid) or 0.0)

    def snapshot_idle(self) -> None:
        for name, pid in self.services.items():
            self.idle_rss[name] = rss_mb(pid) or 0.0


class PodWatch(threading.Thread):
    """Watches the jobs' namespace: when each Pod's containers ran, ended, and were deleted."""

    def __init__(self, core: Any) -> None:
        super().__init__(daemon=True)
        self.core = core
        self.running: dict[str, float] = {}
        self.exited: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        from kubernetes import watch

        while not self.stopped.is_set():
            w = watch.Watch()
            with suppress(Exception):
                for event in w.stream(
                    self.core.list_namespaced_pod, JOB_NAMESPACE, timeout_seconds=5
                ):
                    now = time.monotonic()
                    pod = event["object"]
                    name = pod.metadata.name
                    if event["type"] == "DELETED":
                        self.deleted.setdefault(name, now)
                        continue
                    statuses = pod.status.container_statuses or []
                    if any(s.state and s.state.running for s in statuses):
                        self.running.setdefault(name, now)
                    if statuses and all(s.state and s.state.terminated for s in statuses):
                        self.exited.setdefault(name, now)
                    if self.stopped.is_set():
                        break


class Services:
    """This checkout's services, started for the run and stopped at its end."""

    def __init__(self, logs: Path, sampler: Sampler) -> None:
        self.logs = logs
        self.sampler = sampler
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, env: dict[str, str], ready: str) -> None:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{name}"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        end = time.monotonic() + 60
        while ready not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"{name} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.sampler.services[name] = proc.pid

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            if proc.poll() is None:
                proc.kill()
        self.procs.clear()


def wait_files(paths: list[Path], timeout_s: float, poll_s: float = 0.01) -> list[float]:
    """Seconds until each path exists (polled), in order; raises on timeout."""
    started = time.monotonic()
    seen: list[float] = []
    for path in paths:
        while not path.exists():
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{path} did not appear within {timeout_s:.0f} s")
            time.sleep(poll_s)
        seen.append(time.monotonic() - started)
    return seen


class Bench:
    """One run: the phases in order, their figures, and the cleanup."""

    def __init__(self, budget_s: float, quick: bool) -> None:
        self.run_id = uuid.uuid4().hex[:6]
        self.tag = f"bench-{self.run_id}"
        self.budget_s = budget_s
        self.quick = quick
        self.t0 = time.monotonic()
        self.uid, self.gid = account(USER)
        self.nas = Path(os.environ.get("NAS_ROOT", "/mnt/test-k8s"))
        self.figures: dict[str, Any] = {}
        self.scaled: dict[str, Any] = {}
        self.notes: list[str] = []
        self.cleanups: list[Callable[[], None]] = []
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.logs = RESULTS / "logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir()
        self.sampler = Sampler()
        self.services = Services(self.logs, self.sampler)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.t0)

    # --- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        foreign = {
            name: pids_matching(f"-m\x00services.{name}".encode())
            for name in ("watcher", "validator", "launcher", "collector")
        }
        foreign = {k: v for k, v in foreign.items() if v}
        if foreign:
            self.notes.append(
                f"other services were running on the lab during the run (pids {foreign}); the "
                "NAS-door phases use a private vhost and tree, the execution phases share jobs"
            )
        self.root = make_tree(self.nas)
        self.cleanups.append(lambda: shutil.rmtree(self.root, ignore_errors=True))
        vhost, url = make_vhost(os.environ["AMQP_URL"])
        self.cleanups.append(
            lambda: subprocess.run(
                ["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True
            )
        )
        self.jobs = self.root / "slurm-jobs"
        base = {**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        door = {**base, "AMQP_URL": url, "NAS_ROOT": str(self.root)}
        self.sampler.start()
        self.services.start("watcher", door, "watcher.configured")
        self.services.start("validator", door, '"consuming"')
        self.services.start("launcher", base, '"consuming"')
        self.services.start("collector", base, '"consuming"')
        self.cleanups.append(self.services.stop_all)
        time.sleep(1.0)
        self.sampler.snapshot_idle()
        self.core = client()
        self.podwatch = PodWatch(self.core)
        self.podwatch.start()
        subprocess.run(
            ["kubectl", "create", "namespace", NAMESPACE], capture_output=True, check=False
        )
        self.naive_dir = self.nas / f".bench-naive-{self.run_id}"
        for d in ("in", "done"):
            (self.naive_dir / d).mkdir(parents=True)
        (self.naive_dir / "in").chmod(0o1777)
        self.cleanups.append(lambda: shutil.rmtree(self.naive_dir, ignore_errors=True))
        self.cleanups.append(lambda: scancel_name(self.tag))
        subprocess.run(
            ["scontrol", "create", f"PartitionName={PARTITION}", "Nodes=ALL", "State=UP",
             "MaxTime=1", "Hidden=YES"],
            capture_output=True, check=False,
        )  # fmt: skip
        self.cleanups.append(self._drop_partition)
        # A first drop warms the door (imports, connections) before anything is timed.
        self.drops_ours("warm", 1)

    def _drop_partition(self) -> None:
        scancel_name(f"{self.tag}-hist")
        for _ in range(20):
            done = subprocess.run(
                ["scontrol", "delete", f"PartitionName={PARTITION}"], capture_output=True
            )
            if done.returncode == 0:
                return
            time.sleep(0.5)

    def cleanup(self) -> None:
        self.podwatch_stop()
        for step in reversed(self.cleanups):
            with suppress(Exception):
                step()
        self.sampler.stopped.set()
        for namespace in (NAMESPACE, JOB_NAMESPACE):
            subprocess.run(
                ["kubectl", "delete", "pods", "-n", namespace, "-l", "app=slurmk8s-bench",
                 "--wait=false"],
                capture_output=True, check=False,
            )  # fmt: skip
        for path in (self.nas / "results").glob(f"{self.tag}-*"):
            with suppress(OSError):
                path.unlink()

    def podwatch_stop(self) -> None:
        if hasattr(self, "podwatch"):
            self.podwatch.stopped.set()

    # --- the NAS door --------------------------------------------------------------------

    def drops_ours(self, label: str, count: int, user: str = USER) -> list[float]:
        """One file at a time into submit/, owned by ``user``: seconds from the drop to its
        receipt."""
        uid, gid = account(user)
        took = []
        for n in range(count):
            name = f"{self.tag}-{label}-{n}.sh"
            receipt = self.jobs / "submitted" / f"{name}.receipt.json"
            error = self.jobs / "failed" / f"{name}.error"
            started = time.monotonic()
            drop(self.jobs / "submit" / name, held_script(self.tag), uid, gid)
            while not receipt.exists():
                if error.exists():
                    raise SystemExit(f"{name} refused: {error.read_text()}")
                if time.monotonic() - started > 120:
                    raise SystemExit(f"{name}: no receipt after 120 s")
                time.sleep(0.005)
            took.append(time.monotonic() - started)
        return took

    def drops_naive(self, count: int) -> list[float]:
        """The same drops into the naive loop's folder: seconds until it moved the file."""
        loop = subprocess.Popen(
            ["bash", str(BENCH / "naive_loop.sh"), str(self.naive_dir / "in"),
             str(self.naive_dir / "done")],
            start_new_session=True,
        )  # fmt: skip
        try:
            time.sleep(0.5)  # inotifywait sets its watch
            took = []
            for n in range(count):
                name = f"{self.tag}-naive-{n}.sh"
                started = time.monotonic()
                drop(self.naive_dir / "in" / name, held_script(self.tag), self.uid, self.gid)
                wait_files([self.naive_dir / "done" / name], 60, poll_s=0.002)
                took.append(time.monotonic() - started)
            return took
        finally:
            with suppress(ProcessLookupError):
                os.killpg(loop.pid, signal.SIGTERM)
            loop.wait(timeout=10)

    def burst_ours(self, label: str, count: int, timeout_s: float) -> dict[str, Any]:
        """``count`` files at once: seconds until every receipt is there, and the machine's
        CPU over that time (``cpu_s``, core-seconds; ``cpu_by_process_s``, its split)."""
        names = [f"{self.tag}-{label}-{n}.sh" for n in range(count)]
        processes = process_cpu_s()
        started, cpu = time.monotonic(), busy_core_s()
        for name in names:
            drop(self.jobs / "submit" / name, held_script(self.tag), self.uid, self.gid)
        wanted = {f"{name}.receipt.json" for name in names}
        refused = {f"{name}.error" for name in names}
        done = 0
        while True:
            # Two listings a poll: the CPU this loop takes is the services' to use.
            present = set(os.listdir(self.jobs / "submitted")) & wanted
            errors = sorted(set(os.listdir(self.jobs / "failed")) & refused)
            if errors:
                raise SystemExit(f"burst: {len(errors)} files refused, e.g. {errors[0]}")
            done = len(present)
            elapsed = time.monotonic() - started
            if done == count or elapsed > timeout_s:
                busy = busy_core_s() - cpu
                result = {
                    "files": done,
                    "seconds": elapsed,
                    "cpu_s": busy,
                    "cpu_by_process_s": cpu_by_process(processes, process_cpu_s(), busy),
                }
                if done == count:
                    return result | {"complete": True}
                for name in names:  # the rest is dropped: the validator sees stale events
                    with suppress(OSError):
                        (self.jobs / "submit" / name).unlink()
                return result | {"complete": False, "asked": count}
            time.sleep(0.1)

    def raw_sbatch(self, count: int, script: str, loops: int = 1) -> float:
        """``loops`` serial loops of ``count / loops`` plain sbatch as the user: wall time."""
        path = self.naive_dir / f"raw-{uuid.uuid4().hex[:6]}.sh"
        path.write_text(script)
        path.chmod(0o644)
        argv = ["bash", str(BENCH / "raw_sbatch.sh"), USER, str(count // loops), str(path)]
        started = time.monotonic()
        if loops == 1:
            subprocess.run(argv, check=True, capture_output=True, timeout=max(60, count * 2))
            return time.monotonic() - started
        procs = [
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(loops)
        ]
        for proc in procs:
            proc.wait(timeout=max(60, count * 2))
        return time.monotonic() - started

    def slurmctld_floor(self, count: int) -> None:
        """Where the raw sbatch loop's time goes: job_submit.lua's slurm-k8s path, slurmctld.

        The same held job without ``#K8S_IMAGE`` takes job_submit.lua's plain path (no policy
        check, no wrapping); four loops at once are what the validator's four workers can get
        from slurmctld at best (it takes submissions one at a time under its job write lock).
        """
        plain = self.raw_sbatch(count, held_script(self.tag, k8s=False))
        parallel = self.raw_sbatch(count, held_script(self.tag), loops=4)
        scancel_name(self.tag)
        self.figures["slurmctld_floor"] = {
            "jobs": count,
            "raw_sbatch_plain_s": plain,
            "raw_sbatch_4_loops_s": parallel,
        }

    def phase_submission(self) -> None:
        n_drop = 5 if self.quick else 10
        say(f"drop -> receipt, one at a time ({n_drop}), ours and the naive loop")
        self.figures["history_before"], self.figures["sacct_s_before"] = history_size(USER)
        # The first drop after minutes of idling cost 0.7-1.1 s where the next ones cost
        # 0.05 s (RabbitMQ had reset the watcher's idle publisher connection, since kept
        # alive): shown on its own, the drops below are steady state.
        self.figures["drop_after_idle_s"] = self.drops_ours("idle", 1)
        self.notes.append(
            f"first drop after the execution phases' idle minutes: "
            f"{self.figures['drop_after_idle_s'][0]:.3f} s (not in the drop figures)"
        )
        self.figures["drop_ours_s"] = self.drops_ours("drop", n_drop)
        self.figures["drop_naive_s"] = self.drops_naive(n_drop)
        scancel_name(self.tag)

        small = 50 if self.quick else ISSUE_SIZES["burst_small"]
        say(f"three bursts of {small}, ours, and {small} serial sbatch")
        self.sampler.snapshot_idle()
        # Three times, the median kept: a 2 s burst is one sample of a machine whose speed
        # moves, and the per-file growth key divides by it.
        runs = [
            self.burst_ours(f"small{n}", small, timeout_s=min(300, self.left() / 9))
            for n in range(3)
        ]
        burst_small = sorted(runs, key=lambda run: run["seconds"])[1] | {
            "runs_s": [run["seconds"] for run in runs]
        }
        raw_small = self.raw_sbatch(small, held_script(self.tag))
        scancel_name(self.tag)
        per_file = burst_small["seconds"] / max(1, burst_small["files"])
        # What is left after this burst: the history jobs, a second set of drops, and the
        # busy-queue phase's jobs.
        reserve = 135.0 if not self.quick else 80.0
        allowance = max(60.0, self.left() - reserve)
        large = ISSUE_SIZES["burst_large"]
        fits = int(allowance / (per_file * 1.4) // 100 * 100)
        if self.quick:
            large = min(large, 200)
        if fits < large:
            large = max(2 * small, fits)
        if large != ISSUE_SIZES["burst_large"]:
            self.scaled["burst_large"] = large
        say(f"burst of {large}, ours ({per_file:.3f} s/file at {small}) and {large} sbatch")
        burst_large = self.burst_ours("large", large, timeout_s=allowance)
        processes, cpu = process_cpu_s(), busy_core_s()
        raw_large = self.raw_sbatch(large, held_script(self.tag))
        raw_cpu = busy_core_s() - cpu
        raw_split = cpu_by_process(processes, process_cpu_s(), raw_cpu)
        scancel_name(self.tag)
        self.slurmctld_floor(large)
        if not burst_large["complete"]:
            self.notes.append(
                f"the large burst was cut at the time budget: {burst_large['files']} of "
                f"{large} files accepted in {burst_large['seconds']:.0f} s"
            )
        self.figures |= {
            "burst_small": burst_small | {"raw_sbatch_s": raw_small},
            "burst_large": burst_large
            | {
                "raw_sbatch_s": raw_large * burst_large["files"] / large,
                "raw_sbatch_cpu_s": raw_cpu * burst_large["files"] / large,
                "raw_sbatch_cpu_by_process_s": {
                    k: v * burst_large["files"] / large for k, v in raw_split.items()
                },
            },
        }
        # Every job stays in slurmctld's memory for MinJobAge after it ends, and the lab is
        # shared: keep well clear of MaxJobCount, whatever earlier runs left there.
        history = min(1500 if self.quick else 4000, max(0, job_headroom() - 3000))
        self.scaled["history_jobs"] = history
        say(f"{history} jobs made history (eligible in the bench partition, cancelled)")
        try:
            self.raw_sbatch(
                history, HISTORY_JOB.format(name=f"{self.tag}-hist", partition=PARTITION)
            )
        except subprocess.CalledProcessError as exc:  # a busy shared controller: use what was made
            made = len((exc.stdout or b"").split())
            err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
            self.notes.append(f"history: sbatch stopped after {made} of {history} jobs: {err}")
            self.scaled["history_jobs"] = made
        scancel_name(f"{self.tag}-hist")
        time.sleep(2)  # slurmdbd records the cancellations
        self.figures["history_after"], self.figures["sacct_s_after"] = history_size(USER)
        self.figures["history_fresh_user"], _ = history_size(FRESH_USER)
        say(
            f"drop -> receipt, {USER} ({self.figures['history_after']} jobs in history) and "
            f"{FRESH_USER} ({self.figures['history_fresh_user']}) in turn"
        )
        # In turn, the same minutes: what else the machine does then (slurmdbd recording the
        # cancellations just made, the hour's speed) weighs on both alike; only the user's
        # history differs. Measured against the first drops, this ratio read 0.85-1.30.
        long_history: list[float] = []
        short_history: list[float] = []
        for n in range(n_drop):
            long_history += self.drops_ours(f"hist{n}", 1)
            short_history += self.drops_ours(f"fresh{n}", 1, FRESH_USER)
        self.figures["drop_ours_history_s"] = long_history
        self.figures["drop_ours_fresh_user_s"] = short_history
        scancel_name(self.tag)

    # --- execution -----------------------------------------------------------------------

    def sbatch(self, script: str) -> int:
        out = subprocess.run(
            ["runuser", "-u", USER, "--", "sbatch", "--parsable"],
            input=script,
            text=True,
            capture_output=True,
            check=True,
            cwd=self.nas / "home" / USER,
            timeout=60,
        ).stdout
        return int(out.strip().split(";")[0])

    def one_job(self, name: str) -> dict[str, float]:
        """A 3 s job by plain sbatch: Slurm start → container running, exit → cleaned."""
        job_id = self.sbatch(running_script(name, 3))
        pod = f"job-{job_id}-r0"
        end = time.monotonic() + 120
        started = None
        while started is None:
            if squeue_state(job_id) in ("RUNNING", "CONFIGURING", "COMPLETING"):
                started = time.monotonic()
            elif time.monotonic() > end:
                raise SystemExit(f"job {job_id} did not start")
            else:
                # Seen late, the start flatters our figure; squeue (10 ms of CPU each) polled
                # back to back would slow the very start it times on two cores.
                time.sleep(0.02)
        while pod not in self.podwatch.running and time.monotonic() < end:
            time.sleep(0.01)
        while pod not in self.podwatch.exited and time.monotonic() < end:
            time.sleep(0.01)
        output = self.nas / "results" / f"{name}-{job_id}.out"
        summary = output.with_name(output.name + ".summary.json")
        # Polled often (squeue itself takes about 10 ms): the figure is tens of milliseconds.
        gone = done = None
        while time.monotonic() < end and (gone is None or done is None):
            now = time.monotonic()
            if done is None and squeue_state(job_id) in ("", "COMPLETED", "FAILED"):
                done = now
            if gone is None and summary.exists() and pod in self.podwatch.deleted:
                gone = now
            time.sleep(0.01)
        if pod not in self.podwatch.running or gone is None or done is None:
            raise SystemExit(f"job {job_id}: not followed to its end (see bench/results/logs)")
        return {
            "job_id": job_id,
            "start_to_running": self.podwatch.running[pod] - started,
            "end_to_cleaned": max(gone, done) - self.podwatch.exited[pod],
        }

    def phase_execution(self) -> None:
        count = 4 if self.quick else 8
        # A run started within MinJobAge of another finds that run's jobs still held.
        self.figures["jobs_in_slurmctld"] = held = jobs_in_slurmctld()
        say(f"Slurm start -> container running and exit -> cleaned, {count} jobs one by one")
        if held > 1000:
            self.notes.append(
                f"the execution phase found {held} jobs in slurmctld (an earlier run's, kept for "
                "MinJobAge): its start and end figures are a busy queue's, not a short one's"
            )
        self.sampler.watch_runners.set()
        ours = [self.one_job(f"{self.tag}-exec") for _ in range(count)]
        self.sampler.watch_runners.clear()
        self.figures["start_to_running_s"] = [r["start_to_running"] for r in ours]
        self.figures["end_to_cleaned_s"] = [r["end_to_cleaned"] for r in ours]
        say(f"raw Pod create -> running, kubectl apply+wait, kubectl delete --wait ({count})")
        raw, kubectl, plain, delete, volumes, seed_end = [], [], [], [], [], []
        config_map = f"{self.tag}-script"
        self.core.create_namespaced_config_map(
            JOB_NAMESPACE, {"metadata": {"name": config_map}, "data": {"script": "true\n"}}
        )
        self.cleanups.append(
            lambda: self.core.delete_namespaced_config_map(config_map, JOB_NAMESPACE)
        )
        kubectl_pod = ["bash", str(BENCH / "kubectl_pod.sh")]

        def kubectl_start(pod: dict[str, Any], namespace: str) -> float:
            path = self.naive_dir / f"{pod['metadata']['name']}.json"
            path.write_text(json.dumps(pod))
            started = time.monotonic()
            subprocess.run(
                [*kubectl_pod, "start", str(path), pod["metadata"]["name"], namespace], check=True
            )
            return time.monotonic() - started

        for n in range(count):
            name = f"{self.tag}-vol-{n}"
            volumes.append(create_and_wait(self.core, JOB_NAMESPACE, name, config_map=config_map))
            self.core.delete_namespaced_pod(name, JOB_NAMESPACE, grace_period_seconds=0)
            name = f"{self.tag}-raw-{n}"
            raw.append(create_and_wait(self.core, NAMESPACE, name))
            self._wait_succeeded(name)
            started = time.monotonic()
            subprocess.run([*kubectl_pod, "delete", name, NAMESPACE], check=True)
            delete.append(time.monotonic() - started)
            name = f"{self.tag}-plain-{n}"
            plain.append(kubectl_start(manifest(name), NAMESPACE))
            self.core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
            # The seed's Pod: started as its prolog did, ended as its batch step and epilog.
            name = f"{self.tag}-kubectl-{n}"
            kubectl.append(kubectl_start(seed_pod(name), JOB_NAMESPACE))
            subprocess.run([*kubectl_pod, "end", name, JOB_NAMESPACE], check=True)
            ended = time.monotonic()
            exited = self.podwatch.exited.get(name)
            if exited is not None:
                seed_end.append(ended - exited)
        self.figures |= {
            "raw_pod_s": raw,
            "raw_pod_job_volumes_s": volumes,
            "kubectl_start_s": kubectl,
            "kubectl_start_plain_s": plain,
            "kubectl_delete_s": delete,
            "seed_end_s": seed_end,
        }

    def phase_busy(self) -> None:
        """The execution figures again with the queue the submission phase leaves behind.

        Its thousands of cancelled jobs stay in slurmctld's memory for MinJobAge, as a busy
        cluster's pending jobs would: what a job start and end pay per job slurmctld holds
        (Slurm 22.05's ``squeue --json`` lists them all).
        """
        count = 2 if self.quick else 4
        held = jobs_in_slurmctld()
        say(f"Slurm start -> running and exit -> cleaned with {held} jobs in slurmctld ({count})")
        runs = [self.one_job(f"{self.tag}-busy") for _ in range(count)]
        self.figures["busy"] = {
            "jobs_in_slurmctld": held,
            "start_to_running_s": [r["start_to_running"] for r in runs],
            "end_to_cleaned_s": [r["end_to_cleaned"] for r in runs],
        }

    def _wait_succeeded(self, name: str) -> None:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pod = self.core.read_namespaced_pod(name, NAMESPACE)
            if pod.status.phase in ("Succeeded", "Failed"):
                return
            time.sleep(0.1)

    def phase_e2e(self) -> None:
        count = 10 if self.quick else 24
        if count < ISSUE_SIZES["e2e_jobs"]:
            self.scaled["e2e_jobs"] = count
        say(f"{count} one-second jobs through the NAS door, then as plain Slurm jobs")
        name = f"{self.tag}-e2e"
        started = time.monotonic()
        for n in range(count):
            drop(self.jobs / "submit" / f"{name}-{n}.sh", running_script(name, 1), self.uid,
                 self.gid)  # fmt: skip
        receipts = [self.jobs / "submitted" / f"{name}-{n}.sh.receipt.json" for n in range(count)]
        ours = self._until_drained(name, started, receipts, timeout_s=min(400, self.left() - 300))
        plain_name = f"{self.tag}-plain"
        started = time.monotonic()
        self.raw_sbatch(count, running_script(plain_name, 1, k8s=False))
        plain = self._until_drained(plain_name, started, [], timeout_s=200)
        self.figures["e2e"] = {"jobs": count, "ours_s": ours, "plain_s": plain}

    def _until_drained(
        self, name: str, started: float, receipts: list[Path], timeout_s: float
    ) -> float | None:
        while time.monotonic() - started < timeout_s:
            if all(r.exists() for r in receipts) and not squeue_ids(name):
                return time.monotonic() - started
            time.sleep(0.25)
        scancel_name(name)
        self.notes.append(f"{name}: not drained within {timeout_s:.0f} s")
        return None

    # --- report --------------------------------------------------------------------------

    def keys(self) -> dict[str, Any]:
        f = self._filled()
        small, large = f["burst_small"], f["burst_large"]
        e2e, busy = f.get("e2e", {}), f["busy"]
        h0, h1 = f["history_fresh_user"], f["history_after"]
        # Measured, not extrapolated: a line through two noisy points near each other gave
        # meaningless (even negative) readings at 0 and 20,000 jobs. Both sizes are printed.
        growth = (
            ratio(p50(f["drop_ours_history_s"]), p50(f["drop_ours_fresh_user_s"]))
            if h1 > h0
            else None
        )
        per_min = [
            (e2e["jobs"] * 60 / e2e[k]) if e2e.get(k) else None for k in ("ours_s", "plain_s")
        ]
        return {
            "drop_ratio_vs_naive": ratio(p50(f["drop_ours_s"]), p50(f["drop_naive_s"])),
            "burst_ratio_vs_raw_sbatch": ratio(large["seconds"], large["raw_sbatch_s"]),
            "burst_1000_vs_100_per_file_ratio": ratio(per_file(large), per_file(small)),
            "burst_ratio_floor_all_cores_busy": burst_floor(large, CORES),
            "history_growth_ratio": growth,
            "start_to_running_ratio_vs_raw_pod": ratio(
                p50(f["start_to_running_s"]), p50(f["raw_pod_s"])
            ),
            "start_to_running_ratio_vs_raw_pod_job_volumes": ratio(
                p50(f["start_to_running_s"]), p50(f["raw_pod_job_volumes_s"])
            ),
            "start_to_running_ratio_vs_kubectl": ratio(
                p50(f["start_to_running_s"]), p50(f["kubectl_start_s"])
            ),
            "end_to_cleaned_ratio_vs_kubectl_delete": ratio(
                p50(f["end_to_cleaned_s"]), p50(f["kubectl_delete_s"])
            ),
            "end_to_cleaned_ratio_vs_seed_end": ratio(
                p50(f["end_to_cleaned_s"]), p50(f["seed_end_s"])
            ),
            "e2e_jobs_per_min_ratio_vs_plain_slurm": ratio(per_min[0], per_min[1]),
            "start_to_running_busy_vs_short_queue_ratio": ratio(
                p50(busy["start_to_running_s"]), p50(f["start_to_running_s"])
            ),
            "end_to_cleaned_busy_vs_short_queue_ratio": ratio(
                p50(busy["end_to_cleaned_s"]), p50(f["end_to_cleaned_s"])
            ),
            "runner_rss_mb": self.sampler.runner_max or None,
            "max_service_rss_mb": max(self.sampler.max_rss.values(), default=None),
        }

    def _filled(self) -> dict[str, Any]:
        """The figures, with empty ones where a phase failed (the report says so)."""
        burst = {"files": 0, "seconds": None, "raw_sbatch_s": None}
        empty: dict[str, Any] = {
            "burst_small": burst,
            "burst_large": burst,
            "history_before": 0,
            "history_after": 0,
            "history_fresh_user": 0,
            "busy": {"jobs_in_slurmctld": 0, "start_to_running_s": [], "end_to_cleaned_s": []},
        }
        for key in (
            "drop_ours_s",
            "drop_naive_s",
            "drop_ours_history_s",
            "drop_ours_fresh_user_s",
            "start_to_running_s",
            "end_to_cleaned_s",
            "raw_pod_s",
            "raw_pod_job_volumes_s",
            "kubectl_start_s",
            "kubectl_start_plain_s",
            "kubectl_delete_s",
            "seed_end_s",
        ):
            empty[key] = []
        return empty | self.figures

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(figure, ours, baseline, measured as) lines of the table above the keys."""
        f = self._filled()

        def pp(values: list[float]) -> str:
            if not values:
                return "-"
            return f"p50 {p50(values):.3f} s  p95 {p95(values):.3f} s"

        small, large, e2e = f["burst_small"], f["burst_large"], f.get("e2e", {})
        busy = f["busy"]
        floor = f.get("slurmctld_floor", {})

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f} s"

        def n(v: object) -> str:
            """A count in a label; "-" where its phase did not run."""
            return str(v) if v else "-"

        def ms_per(burst: dict[str, Any], key: str, times: int = 1) -> str:
            """A burst's figure per file in ms ("-" without it)."""
            if not burst.get(key) or not burst.get("files"):
                return "-"
            return f"{burst[key] * times / burst['files'] * 1000:.1f} ms"

        return [
            ("drop -> receipt (one file)", pp(f["drop_ours_s"]), pp(f["drop_naive_s"]),
             "naive inotifywait loop"),
            (f"drop -> receipt, history {n(f['history_after'])} jobs", pp(f["drop_ours_history_s"]),
             pp(f["drop_ours_fresh_user_s"]),
             f"ours, in turn, a user with {n(f['history_fresh_user'])}"),
            (f"burst of {n(small['files'])} -> all accepted", fmt(small["seconds"]),
             fmt(small["raw_sbatch_s"]), "serial raw sbatch loop"),
            (f"burst of {n(large['files'])} -> all accepted", fmt(large["seconds"]),
             fmt(large["raw_sbatch_s"]), "serial raw sbatch loop"),
            ("  machine CPU per file (every process)", ms_per(large, "cpu_s"),
             ms_per(large, "raw_sbatch_cpu_s"), f"the raw loop's; 1.0 needs ours <= "
             f"{ms_per(large, 'raw_sbatch_s', CORES)} ({CORES} cores x its wall per job)"),
            (f"  {n(floor.get('jobs'))} raw sbatch: 4 loops at once", fmt(
                floor.get("raw_sbatch_4_loops_s")), fmt(floor.get("raw_sbatch_plain_s")),
             "one loop, no #K8S_IMAGE (lua's plain path)"),
            ("Slurm start -> container running", pp(f["start_to_running_s"]),
             pp(f["raw_pod_s"]), "raw Pod create (client)"),
            ("", "", pp(f["raw_pod_job_volumes_s"]), "raw Pod with a job Pod's volumes"),
            ("", "", pp(f["kubectl_start_s"]), "kubectl apply + wait, the seed's Pod (NAS)"),
            ("", "", pp(f["kubectl_start_plain_s"]), "kubectl apply + wait, a plain Pod"),
            ("container exit -> job done, summary, Pod gone", pp(f["end_to_cleaned_s"]),
             pp(f["kubectl_delete_s"]), "kubectl delete --wait (Pod already ended)"),
            ("", "", pp(f["seed_end_s"]), "seed: kubectl wait terminal + delete --wait"),
            (f"  the same, {n(busy['jobs_in_slurmctld'])} jobs in slurmctld: start",
             pp(busy["start_to_running_s"]), pp(f["start_to_running_s"]),
             f"ours above, {n(f.get('jobs_in_slurmctld'))} jobs in slurmctld"),
            ("  ... and end", pp(busy["end_to_cleaned_s"]), pp(f["end_to_cleaned_s"]),
             "ours above"),
            (f"{n(e2e.get('jobs'))} one-second jobs, drop -> all done", fmt(e2e.get("ours_s")),
             fmt(e2e.get("plain_s")), "plain Slurm jobs (sbatch loop)"),
            ("runner RSS (batch step)", f"{self.sampler.runner_max:.1f} MB",
             f"{self.sampler.stepd_max:.1f} MB", "its slurmstepd"),
            ("services RSS, max (idle -> max)", ", ".join(
                f"{k} {self.sampler.idle_rss.get(k, 0):.0f}->{v:.0f}"
                for k, v in self.sampler.max_rss.items()), "", "MB"),
        ]  # fmt: skip

    def report(self, elapsed: float) -> dict[str, Any]:
        keys = self.keys()
        document = {
            "run_id": self.run_id,
            "commit": commit(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(elapsed, 1),
            "machine": {
                "cores": CORES,
                "kernel": platform.release(),
                "python": platform.python_version(),
            },
            "issue_sizes": ISSUE_SIZES,
            "scaled": self.scaled,
            "notes": self.notes,
            "keys": keys,
            "goals": {k: {"op": op, "goal": g} for k, (op, g) in GOALS.items()},
            "figures": self.figures,
            "service_rss_mb": {"idle": self.sampler.idle_rss, "max": self.sampler.max_rss},
            "slurmstepd_rss_mb": self.sampler.stepd_max,
        }
        (RESULTS / "latest.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
        print(f"\nslurm-k8s bench {self.run_id}: {CORES} cores, {elapsed:.0f} s\n")
        width = max(len(r[0]) for r in self.rows())
        print(f"{'figure':<{width}}  {'ours':<28}  {'baseline':<28}  baseline is")
        for row in self.rows():
            print(f"{row[0]:<{width}}  {row[1]:<28}  {row[2]:<28}  {row[3]}")
        split = cpu_split_rows(self._filled()["burst_large"])
        if split:
            print("\nCPU per file in the large burst, by process (ms; the raw loop's beside it)")
            for name, ours, raw in split:
                print(f"  {name:<58} {ours:>6}  {raw:>6}")
        print(f"\n{'key':<40} {'value':>9}  goal")
        for key, value in keys.items():
            op, goal = GOALS[key]
            shown = "-" if value is None else f"{value:.2f}"
            verdict = ""
            if goal is not None and value is not None:
                verdict = "met" if value <= goal else "NOT met"
            print(f"{key:<40} {shown:>9}  {op} {goal if goal is not None else ''} {verdict}")
        for key, size in self.scaled.items():
            print(f"scaled: {key} = {size} (issue: {ISSUE_SIZES[key]}) to fit the time budget")
        if self.figures.get("history_after") is not None:
            print(
                f"history: {USER} {self.figures.get('history_before')} -> "
                f"{self.figures.get('history_after')} jobs, {FRESH_USER} "
                f"{self.figures.get('history_fresh_user')}; history_growth_ratio is drop p50 "
                f"for {USER} / for {FRESH_USER}, their files dropped in turn"
            )
        for note in self.notes:
            print(f"note: {note}")
        chart(document, RESULTS / "latest.png")
        print(f"\nwrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.png'}")
        return document


def commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it (others' edits)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "services", "shared", "slurm"], cwd=REPO
    ).returncode
    return f"{head}{'+dirty' if dirty else ''}"


def chart(document: dict[str, Any], path: Path) -> None:
    """Each key's ratio beside its goal (log scale), one bar each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, v in document["keys"].items() if isinstance(v, int | float)]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(keys) + 1.5))
    values = [document["keys"][k] for k in keys]
    goals = [document["goals"][k]["goal"] for k in keys]
    colors = [
        "tab:green" if g is not None and v <= g else ("tab:gray" if g is None else "tab:red")
        for v, g in zip(values, goals, strict=True)
    ]
    ax.barh(keys, values, color=colors)
    for i, goal in enumerate(goals):
        if goal is not None:
            ax.plot([goal, goal], [i - 0.4, i + 0.4], color="black", linewidth=2)
    for i, value in enumerate(values):
        ax.text(value, i, f" {value:.2f}", va="center")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_title(
        f"slurm-k8s bench {document['run_id']} ({document['machine']['cores']} cores): "
        "value (bar) and goal (black line)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--budget-s", type=float, default=840.0, help="whole run (15 min max)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--phases",
        default="execution,e2e,submission,busy",
        help="comma-separated subset to run (e.g. 'execution' for the runner and services RSS)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.environ.get("AMQP_URL"):
        raise SystemExit("run as root after `source <(make -s lab-env)` (make bench does both)")
    bench = Bench(min(args.budget_s, 900.0), args.quick)
    started = time.monotonic()
    alarm = threading.Timer(bench.budget_s + 50, lambda: os.kill(os.getpid(), signal.SIGTERM))
    alarm.daemon = True
    alarm.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench: out of time, stopping"))
    try:
        bench.setup()
        # Execution first: the submission phases leave thousands of cancelled jobs in
        # slurmctld's memory for MinJobAge (300 s), and every squeue --json lists them.
        chosen = args.phases.split(",")
        for phase in (
            bench.phase_execution,
            bench.phase_e2e,
            bench.phase_submission,
            bench.phase_busy,
        ):
            if phase.__name__.removeprefix("phase_") not in chosen:
                bench.notes.append(f"{phase.__name__} not run (--phases {args.phases})")
                continue
            try:
                phase()
            except Exception as exc:  # the report still shows what was measured
                traceback.print_exc()
                bench.notes.append(f"{phase.__name__} failed: {exc!r}"[:300])
    finally:
        say("cleaning up")
        bench.cleanup()
    bench.report(time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
