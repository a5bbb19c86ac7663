"""The Slurm command boundary: ``scontrol``, ``sacct``, ``squeue`` and ``sprio`` as subprocesses.

Everything that asks Slurm something from a service or the CLI goes through here, so the
parsing and the error mapping live in one place: a command that cannot reach slurmctld or
slurmdbd is a ``TransientError``; "no such job" is ``SlurmJobUnknown`` (the caller decides what
that means, and it never means "finished": fail closed); a refused update is a
``PermanentError``. Parsing is pure and unit-tested against captured Slurm 22.05 output.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from shared.errors import PermanentError, TransientError

TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
"""States after which a job (its last run) will never run again by itself."""

_UNKNOWN_JOB = ("invalid job id", "job not found", "no such job")
_UNREACHABLE = (
    "unable to contact slurm controller",
    "socket timed out",
    "slurm_persist_conn_open",
    "connection refused",
    "slurmdbd",
    "try again",
)


class SlurmJobUnknown(PermanentError):
    """Slurm does not know the job (never existed, or aged out of slurmctld's memory)."""


Runner = Callable[[Sequence[str], float], str]
"""Runs a command and returns its stdout; raises the taxonomy's errors."""


def run_command(argv: Sequence[str], timeout_s: float) -> str:
    """Run a Slurm command, translating its failures.

    Raises:
        SlurmJobUnknown: the command says the job does not exist.
        TransientError: slurmctld/slurmdbd unreachable, timeout, or an unexplained failure.
        PermanentError: the command is missing or refused the request.
    """
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError as exc:
        raise PermanentError(f"{argv[0]} is not installed on this host") from exc
    except subprocess.TimeoutExpired as exc:
        raise TransientError(f"{argv[0]} timed out after {timeout_s:.0f} s") from exc
    if done.returncode == 0:
        return done.stdout
    message = (done.stderr or done.stdout).strip()
    lowered = message.lower()
    if any(text in lowered for text in _UNKNOWN_JOB):
        raise SlurmJobUnknown(f"{' '.join(argv[:2])}: {message}")
    refused = ("access" in lowered and "denied" in lowered) or "not authorized" in lowered
    # slurmctld refuses any update of a job that has finished (COMPLETING included).
    if refused or "already finished" in lowered:
        raise PermanentError(f"{' '.join(argv[:2])}: {message}")
    if any(text in lowered for text in _UNREACHABLE):
        raise TransientError(f"{' '.join(argv[:2])}: {message}", delay=5)
    raise TransientError(f"{' '.join(argv[:2])} exited {done.returncode}: {message}")


# scontrol's one-line records are "Key=Value Key=Value"; values may contain spaces and "=",
# but scontrol's keys start with a capital letter, while the values we care about
# ("pod=ns/name phase=Running", "slurmk8s-key=…") are lower case.
_FIELD_START = re.compile(r" (?=[A-Z][A-Za-z0-9_:/]*=)")


def parse_record(line: str) -> dict[str, str]:
    """Parse one ``scontrol -o show …`` line into a dict (first occurrence of a key wins)."""
    fields: dict[str, str] = {}
    for part in _FIELD_START.split(line.strip()):
        key, sep, value = part.partition("=")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _name_and_id(text: str) -> tuple[str, int | None]:
    """``alice(2001)`` → ("alice", 2001)."""
    match = re.fullmatch(r"(.*?)\((\d+)\)", text)
    if not match:
        return text, None
    return match.group(1), int(match.group(2))


def _null(value: str) -> str:
    return "" if value in ("(null)", "None", "Unknown", "N/A") else value


@dataclass(frozen=True)
class JobRecord:
    """What slurmctld says about a job (``scontrol -o show job``)."""

    fields: Mapping[str, str]

    def get(self, key: str) -> str:
        """A field, with Slurm's placeholders ("(null)", "None", "Unknown") as ""."""
        return _null(self.fields.get(key, ""))

    @property
    def job_id(self) -> int:
        """The job id."""
        return int(self.fields.get("JobId", "0"))

    @property
    def state(self) -> str:
        """JobState, e.g. RUNNING, PENDING, COMPLETING, COMPLETED."""
        return self.fields.get("JobState", "")

    @property
    def reason(self) -> str:
        """Why it is pending, or why it ended (``None`` → "")."""
        return self.get("Reason")

    @property
    def restarts(self) -> int:
        """How many times it was requeued: the restart count of its current run."""
        return int(self.fields.get("Restarts", "0") or 0)

    @property
    def user(self) -> str:
        """The owner's name."""
        return _name_and_id(self.fields.get("UserId", ""))[0]

    @property
    def uid(self) -> int | None:
        """The owner's uid."""
        return _name_and_id(self.fields.get("UserId", ""))[1]

    @property
    def gid(self) -> int | None:
        """The job's gid."""
        return _name_and_id(self.fields.get("GroupId", ""))[1]

    @property
    def stdout(self) -> str:
        """The --output path with its patterns expanded."""
        return expand_output_pattern(self.get("StdOut"), self)

    @property
    def stderr(self) -> str:
        """The --error path with its patterns expanded."""
        return expand_output_pattern(self.get("StdErr"), self)


def expand_output_pattern(pattern: str, job: JobRecord) -> str:
    """Expand %j %u %x %A %a %N %% (scontrol usually shows them expanded already)."""
    if "%" not in pattern:
        return pattern
    array_job = job.get("ArrayJobId") or str(job.job_id)
    values = {
        "j": str(job.job_id),
        "J": str(job.job_id),
        "u": job.user,
        "x": job.get("JobName"),
        "A": array_job,
        "a": job.get("ArrayTaskId") or "4294967294",
        "N": job.get("BatchHost") or job.get("NodeList"),
        "%": "%",
    }
    return re.sub(r"%([jJuxAaN%])", lambda m: values[m.group(1)], pattern)


@dataclass(frozen=True)
class AccountingRecord:
    """What slurmdbd says about a job's allocation (``sacct -X``)."""

    state: str
    exit_code: str
    start: str
    end: str
    node_list: str
    alloc_tres: str
    user: str

    @property
    def base_state(self) -> str:
        """The state without "by <uid>" (``CANCELLED by 2001`` → ``CANCELLED``)."""
        return self.state.split(" ", 1)[0].rstrip("+")


SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "Start", "End", "NodeList", "AllocTRES", "User")


def parse_sacct(text: str, job_id: int) -> AccountingRecord | None:
    """The allocation line of ``job_id`` from ``sacct -n -P -X --format=SACCT_FIELDS``."""
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) == len(SACCT_FIELDS) and cols[0] == str(job_id):
            return AccountingRecord(*cols[1:])
    return None


def gpu_count(tres: str) -> int:
    """GPUs in a TRES string (``cpu=2,mem=1G,gres/gpu=2`` → 2; typed gres not double-counted)."""
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key in ("gres/gpu", "gpu"):
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


class SlurmCtl:
    """Slurm's commands with their output parsed.

    Args:
        runner: runs a command (tests pass a fake).
        timeout_s: per-command limit; slurmctld answers in milliseconds when healthy.
    """

    def __init__(self, runner: Runner = run_command, timeout_s: float = 15.0) -> None:
        self._run = runner
        self._timeout_s = timeout_s

    def show_job(self, job_id: int) -> JobRecord | None:
        """The record slurmctld has of the job, or None if it does not know it (any more)."""
        try:
            out = self._run(["scontrol", "-o", "show", "job", str(job_id)], self._timeout_s)
        except SlurmJobUnknown:
            return None
        for line in out.splitlines():
            record = JobRecord(parse_record(line))
            if record.fields.get("JobId") == str(job_id):
                return record
        return None

    def accounting(self, job_id: int) -> AccountingRecord | None:
        """The record slurmdbd has of the allocation, or None if it has none (yet)."""
        out = self._run(
            [
                "sacct",
                "-j",
                str(job_id),
                "-X",
                "-n",
                "-P",
                f"--format={','.join(SACCT_FIELDS)}",
            ],
            self._timeout_s,
        )
        return parse_sacct(out, job_id)

    def update_job(self, job_id: int, **fields: str) -> None:
        """``scontrol update JobId=<id> Key=Value…`` (values are single argv words)."""
        argv = ["scontrol", "update", f"JobId={job_id}"]
        argv += [f"{key}={value}" for key, value in fields.items()]
        self._run(argv, self._timeout_s)

    def priority_factors(self, job_id: int) -> str:
        """``sprio -l -j`` output for a pending job ("" when it has none)."""
        try:
            return self._run(["sprio", "-l", "-j", str(job_id)], self._timeout_s).strip()
        except SlurmJobUnknown:
            return ""

    def running_gpu_jobs(self, node: str | None = None) -> list[tuple[int, int]]:
        """(job id, GPUs) of running jobs holding GPUs, optionally on one node."""
        argv = ["squeue", "-h", "-t", "RUNNING,COMPLETING", "-o", "%i|%b|%N"]
        if node:
            argv += ["-w", node]
        jobs: list[tuple[int, int]] = []
        for line in self._run(argv, self._timeout_s).splitlines():
            cols = line.split("|")
            if len(cols) == 3 and cols[0].isdigit():
                gpus = gres_gpu_count(cols[1])
                if gpus:
                    jobs.append((int(cols[0]), gpus))
        return jobs


def gres_gpu_count(gres: str) -> int:
    """GPUs in squeue's ``%b`` (``gres:gpu:2``, ``gres/gpu:tesla:2``, ``gpu:1``, ``N/A``)."""
    total = 0
    for item in gres.split(","):
        parts = re.split(r"[:/]", item)
        if "gpu" not in parts:
            continue
        tail = parts[-1]
        total += int(tail) if tail.isdigit() else 1
    return total
