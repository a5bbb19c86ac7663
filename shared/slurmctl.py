"""The Slurm command boundary: ``scontrol``, ``sacct``, ``squeue`` and ``sprio`` as subprocesses.

Everything that asks Slurm something from a service or the CLI goes through here, so the
parsing and the error mapping live in one place: a command that cannot reach slurmctld or
slurmdbd is a ``TransientError``; "no such job" is ``SlurmJobUnknown`` (the caller decides what
that means, and it never means "finished": fail closed); a refused update is a
``PermanentError``. Parsing is pure and unit-tested against captured Slurm 22.05 output.

Who a job belongs to and what it was given come only from structured output
(``squeue --json``, ``JobInfo``): ``scontrol show job`` prints user strings (the job name, the
comment, paths) unquoted among its ``Key=Value`` fields, so a job named
``x UserId=alice(2001)`` reads as alice's job there. The text record (``JobRecord``) is kept for
what JSON lacks on 22.05 (the output paths, which squeue leaves empty) and for display; no
identity, resource or policy decision reads it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.errors import PermanentError, TransientError
from shared.jobscript.wrapping import ACCEPTED_MARK

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
    """What ``scontrol -o show job`` prints: for people (``slurmk8s explain``) only.

    User strings are printed unquoted among the fields, so any field can be forged by a job
    name; decisions read ``JobInfo``.
    """

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
        """The owner's name as the text shows it: for display, never for a decision."""
        return _name_and_id(self.fields.get("UserId", ""))[0]

    @property
    def stdout(self) -> str:
        """The --output path as scontrol shows it (for display only)."""
        return self.get("StdOut")


def expand_output_pattern(
    pattern: str,
    *,
    job_id: int,
    user: str,
    name: str,
    array_job_id: int | None = None,
    array_task_id: int | None = None,
    node: str = "",
) -> str:
    """Expand sbatch's ``%j %J %u %x %A %a %N %%`` in an output path (the one expander).

    ``%x`` is the job name, which the user chose: the result only says where to look, and
    files there are trusted only if they belong to the job's uid.
    """
    if "%" not in pattern:
        return pattern
    values = {
        "j": str(job_id),
        "J": str(job_id),
        "u": user,
        "x": name,
        "A": str(array_job_id or job_id),
        "a": str(array_task_id) if array_task_id is not None else "4294967294",
        "N": node,
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

    def job_info(self, job_id: int) -> JobInfo | None:
        """The job's structured record, or None if slurmctld no longer holds it.

        Raises:
            TransientError: slurmctld unreachable.
            MalformedSlurmOutput: squeue answered something this boundary cannot read.
        """
        return parse_squeue_json(self._run(["squeue", "--json"], self._timeout_s), job_id)

    def jobs(self) -> dict[int, JobInfo]:
        """Every job slurmctld holds, by id, from one ``squeue --json``."""
        return parse_squeue_all(self._run(["squeue", "--json"], self._timeout_s))

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

    def batch_script(self, job_id: int) -> str:
        """The batch script slurmctld stored (our wrapper, for accepted slurm-k8s jobs).

        ``scontrol write batch_script <id> -`` prints it on stdout (checked on 22.05).
        """
        return self._run(["scontrol", "write", "batch_script", str(job_id), "-"], self._timeout_s)

    def note(self, job: JobInfo, text: str) -> None:
        """Record ``text`` in the job's AdminComment, keeping the acceptance mark."""
        wanted = admin_note(job.admin_comment, text)
        if wanted != job.admin_comment:
            self.update_job(job.job_id, AdminComment=wanted)

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


def admin_note(current: str, text: str) -> str:
    """The AdminComment for a note, keeping job_submit.lua's acceptance mark in front of it.

    Only the mark already on the job is kept: a note never makes a job a slurm-k8s job.
    """
    if current.startswith(ACCEPTED_MARK):
        return f"{ACCEPTED_MARK}; {text}"
    return text


class MalformedSlurmOutput(PermanentError):
    """A Slurm command answered, but not in the form this boundary parses."""


@dataclass(frozen=True)
class JobInfo:
    """A job as ``squeue --json`` reports it: every field is a JSON value, never split text."""

    job_id: int
    state: str
    reason: str
    restarts: int
    name: str
    user: str
    uid: int
    gid: int
    partition: str
    node: str
    cpus: int
    mem_mb: int
    gpus: int
    work_dir: str
    time_limit_s: int | None
    """None: no limit."""
    submit_time: int
    """Epoch seconds; with the job id it names one job even if slurmctld reuses ids."""
    start: str = ""
    end: str = ""
    array_job_id: int | None = None
    array_task_id: int | None = None
    comment: str = ""
    admin_comment: str = ""
    stdout: str = ""
    """The --output path, patterns expanded (Slurm's default when none was given)."""
    stderr: str = ""
    """The --error path, patterns expanded; "" when it goes with stdout."""


def _default_output(job: Mapping[str, object], array: bool) -> str:
    """Where a batch job writes without ``--output``: ``slurm-%j.out`` or ``slurm-%A_%a.out``."""
    if job.get("batch_flag") is not True:
        return ""
    work_dir = _json_str(job, "current_working_directory").rstrip("/")
    if array:
        name = f"slurm-{job.get('array_job_id')}_{job.get('array_task_id')}.out"
    else:
        name = f"slurm-{job.get('job_id')}.out"
    return f"{work_dir}/{name}"


def _epoch_iso(value: object) -> str:
    if not isinstance(value, int) or value <= 0:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _tres_mem_mb(tres: str) -> int:
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "mem" and value:
            units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
            unit = value[-1].upper()
            number = value[:-1] if unit in units else value
            try:
                return int(float(number) * units.get(unit, 1))
            except ValueError:
                return 0
    return 0


def _json_int(job: Mapping[str, object], key: str) -> int | None:
    value = job.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json_str(job: Mapping[str, object], key: str) -> str:
    value = job.get(key)
    return value if isinstance(value, str) else ""


def job_info_of(job: Mapping[str, object]) -> JobInfo:
    """One job object of ``squeue --json`` (Slurm 22.05, openapi v0.0.38) as ``JobInfo``.

    Raises:
        MalformedSlurmOutput: a field that decides identity or resources is missing or mistyped.
    """
    job_id, uid, gid = (_json_int(job, k) for k in ("job_id", "user_id", "group_id"))
    if job_id is None or uid is None or gid is None:
        raise MalformedSlurmOutput(
            f"squeue --json: job {job.get('job_id')!r} without job_id/user_id/group_id"
        )
    tres = _json_str(job, "tres_alloc_str") or _json_str(job, "tres_req_str")
    limit = _json_int(job, "time_limit")
    array_job = _json_int(job, "array_job_id") or None
    array_task = _json_int(job, "array_task_id")
    user, name = _json_str(job, "user_name"), _json_str(job, "name")
    node = _json_str(job, "batch_host") or _json_str(job, "nodes")

    def path(key: str) -> str:
        return expand_output_pattern(
            _json_str(job, key),
            job_id=job_id,
            user=user,
            name=name,
            array_job_id=array_job,
            array_task_id=array_task,
            node=node,
        )

    return JobInfo(
        job_id=job_id,
        state=_json_str(job, "job_state"),
        reason=_null(_json_str(job, "state_reason")),
        restarts=_json_int(job, "restart_cnt") or 0,
        name=name,
        user=user,
        uid=uid,
        gid=gid,
        partition=_json_str(job, "partition"),
        node=node,
        cpus=_json_int(job, "cpus") or 1,
        mem_mb=_tres_mem_mb(tres),
        gpus=gpu_count(tres),
        work_dir=_json_str(job, "current_working_directory") or "/",
        time_limit_s=None if limit is None else limit * 60,
        submit_time=_json_int(job, "submit_time") or 0,
        start=_epoch_iso(job.get("start_time")),
        end=_epoch_iso(job.get("end_time")),
        array_job_id=array_job,
        array_task_id=array_task,
        comment=_json_str(job, "comment"),
        admin_comment=_json_str(job, "admin_comment"),
        stdout=path("standard_output") or _default_output(job, array_task is not None),
        stderr=path("standard_error"),
    )


def _squeue_jobs(text: str) -> list[dict[str, object]]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise MalformedSlurmOutput(f"squeue --json: not JSON ({exc})") from exc
    jobs = document.get("jobs") if isinstance(document, dict) else None
    if not isinstance(jobs, list):
        raise MalformedSlurmOutput("squeue --json: no 'jobs' list")
    return [job for job in jobs if isinstance(job, dict)]


def parse_squeue_json(text: str, job_id: int) -> JobInfo | None:
    """The job ``job_id`` in ``squeue --json`` output, or None if slurmctld does not list it.

    Slurm 22.05's ``squeue --json`` ignores ``-j``/``-u`` and lists every job it holds, so the
    job is picked out here by its id.

    Raises:
        MalformedSlurmOutput: not squeue's JSON, or the job's object is not readable.
    """
    for job in _squeue_jobs(text):
        if job.get("job_id") == job_id:
            return job_info_of(job)
    return None


def parse_squeue_all(text: str) -> dict[int, JobInfo]:
    """Every readable job of ``squeue --json`` output, by id (unreadable ones are left out).

    Raises:
        MalformedSlurmOutput: not squeue's JSON.
    """
    found: dict[int, JobInfo] = {}
    for job in _squeue_jobs(text):
        try:
            info = job_info_of(job)
        except MalformedSlurmOutput:
            continue
        found[info.job_id] = info
    return found


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
