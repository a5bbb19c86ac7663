"""The Slurm command boundary: ``scontrol``, ``sacct``, ``squeue`` and ``sprio`` as subprocesses.

Everything that asks Slurm something from a service or the CLI goes through here, so the
parsing and the error mapping live in one place: a command that cannot reach slurmctld or
slurmdbd is a ``TransientError``; "no such job" is ``SlurmJobUnknown`` (the caller decides what
that means, and it never means "finished": fail closed); a refused update is a
``PermanentError``. Parsing is pure and unit-tested against captured Slurm 22.05 output.

Who a job belongs to and what it was given come only from structured output: one job's own
``squeue --Format`` record whose every field ends in a separator counted exactly
(``JobStatus``), or ``squeue --json`` (``JobInfo``). ``scontrol show job`` prints user strings
(the job name, the comment, paths) unquoted among its ``Key=Value`` fields, so a job named
``x UserId=alice(2001)`` reads as alice's job there. The text record (``JobRecord``) is kept for
what JSON lacks on 22.05 (the output paths, which squeue leaves empty) and for display; no
identity, resource or policy decision reads it.
"""

from __future__ import annotations

import codecs
import json
import os
import pwd
import re
import resource
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import PermanentError, ServiceError, TransientError
from shared.jobscript.wrapping import ACCEPTED_MARK
from shared.jobtrace import with_traceparent

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


def takes_updates(state: str) -> bool:
    """Whether slurmctld still accepts ``scontrol update`` of a job in ``state``.

    It refuses any update once the job is completing or over ("Job has already finished").
    """
    return state not in TERMINAL_STATES and state != "COMPLETING"


_UNKNOWN_JOB = ("invalid job id", "job not found", "no such job")
# The clients' wording when slurmctld (or slurmdbd for sacct) is down, busy or unreachable.
_TRANSIENT = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Connection timed out|temporarily unavailable|Slurmctld is busy|Zero Bytes were "
    r"transmitted|Communication connection failure|Unable to establish|Transport endpoint|"
    r"No route to host|slurmdbd|slurm_persist_conn_open|Connection reset|try again|"
    r"Resource temporarily",
    re.IGNORECASE,
)
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SESSION_NOFILE = 1024
"""The soft open-files limit pam_limits (PAM 1.5) gives a new session, whatever the parent's.

sbatch copies its limits into the job (``PropagateResourceLimits=ALL``); runuser's session
set this one and left every other limit as inherited (compared with ``ulimit -Sa``/``-Ha``).
"""


def adopt_session_nofile() -> None:
    """Give this process the soft open-files limit a session gives sbatch (``SESSION_NOFILE``).

    Its children inherit it, so ``as_owner`` needs no ``prlimit`` per sbatch (0.9 ms of CPU
    each). For the validator, which opens few files.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SESSION_NOFILE, hard), hard))


def as_owner(owner: pwd.struct_passwd, argv: Sequence[str]) -> list[str]:
    """``argv`` as ``owner`` the way ``runuser -u`` ran it, without its PAM session.

    runuser's session (pam_keyinit, pam_limits, pam_unix) cost 2.2 ms of CPU per sbatch.
    What it left on the process is made here: the soft open-files limit (``prlimit``, unless
    this process has it already: ``adopt_session_nofile``), then ``initgroups``, gid and uid
    (``setpriv``, by number); environment, umask, directory, capabilities and every other
    limit compare equal. Small execs, so the service's ``subprocess`` still uses vfork:
    ``subprocess``'s own ``user=`` makes it fork, which copies the service's page tables
    (2.8 ms of CPU in all at 44 MB, where ``setpriv`` costs 2.2 ms).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = min(SESSION_NOFILE, hard)
    limit = [] if soft == nofile else [
        "prlimit", f"--nofile={nofile}:", "--",
    ]  # fmt: skip
    return [
        *limit,
        "setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}", "--init-groups", "--",
        *argv,
    ]  # fmt: skip


class SlurmJobUnknown(PermanentError):
    """Slurm does not know the job (never existed, or aged out of slurmctld's memory)."""


def is_transient(message: str) -> bool:
    """Whether a Slurm client's error text means "try again later"."""
    return bool(_TRANSIENT.search(message))


def error_lines(stderr: str) -> list[str]:
    """The error lines of a Slurm client without the ``sbatch: error:`` prefix, for users."""
    lines = []
    for raw in stderr.splitlines():
        text = re.sub(r"^(sbatch|squeue|sacct|scontrol): (error|fatal): ", "", raw.strip())
        if text:
            lines.append(text)
    return lines


def exec_command(
    argv: Sequence[str],
    timeout_s: float,
    *,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one Slurm client: the only place a Slurm command becomes a process.

    Raises:
        TransientError: the command did not answer in time (what it did is unknown: callers
            that submit look their key up before trying again), or it cannot be run here
            (missing, not executable): an operator's fix, so users' work waits instead of
            failing.
    """
    try:
        return subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise _no_answer(argv, timeout_s) from exc
    except OSError as exc:
        raise _cannot_run(argv, exc) from exc


def _no_answer(argv: Sequence[str], timeout_s: float) -> TransientError:
    return TransientError(f"{argv[0]} did not answer within {timeout_s:.0f} s")


def _cannot_run(argv: Sequence[str], exc: OSError) -> TransientError:
    return TransientError(
        f"cannot run {argv[0]} on this host ({exc.strerror}); is the Slurm client installed?"
    )


Runner = Callable[[Sequence[str], float], str]
"""Runs a command and returns its stdout; raises the taxonomy's errors."""


def run_command(argv: Sequence[str], timeout_s: float) -> str:
    """Run a Slurm query or update as this process's user, translating its failures.

    Raises:
        SlurmJobUnknown: the command says the job does not exist.
        TransientError: slurmctld/slurmdbd unreachable, timeout, missing client, or an
            unexplained failure.
        PermanentError: the command refused the request.
    """
    done = exec_command(argv, timeout_s)
    stdout = done.stdout.decode(errors="replace")
    if done.returncode == 0:
        return stdout
    raise _failure(argv, done.returncode, (done.stderr.decode(errors="replace") or stdout).strip())


def _failure(argv: Sequence[str], returncode: int, message: str) -> ServiceError:
    """The error for a Slurm command that exited ``returncode`` saying ``message``."""
    lowered = message.lower()
    if any(text in lowered for text in _UNKNOWN_JOB):
        return SlurmJobUnknown(f"{' '.join(argv[:2])}: {message}")
    refused = ("access" in lowered and "denied" in lowered) or "not authorized" in lowered
    # slurmctld refuses any update of a job that has finished (COMPLETING included).
    if refused or "already finished" in lowered:
        return PermanentError(f"{' '.join(argv[:2])}: {message}")
    if is_transient(message):
        return TransientError(f"{' '.join(argv[:2])}: {message}", delay=5)
    return TransientError(f"{' '.join(argv[:2])} exited {returncode}: {message}")


Streamer = Callable[[Sequence[str], float], Iterator[str]]
_CHUNK = 256 * 1024


def stream_command(argv: Sequence[str], timeout_s: float) -> Iterator[str]:
    """Run a Slurm query and yield its output as text while it comes, failures as ``run_command``.

    For answers that can be tens of MB (``squeue --json``): the whole output is never held,
    neither as bytes nor as text. Stopping early (the caller found what it wanted) ends the
    command. A failure is raised when the output has been read, before the caller sees its end.

    Raises:
        TransientError, PermanentError, SlurmJobUnknown: as ``run_command``.
    """
    with tempfile.TemporaryFile() as errors:
        try:
            # Unbuffered: each read returns what the pipe holds, up to _CHUNK.
            proc = subprocess.Popen(
                list(argv),
                bufsize=0,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
        except OSError as exc:
            raise _cannot_run(argv, exc) from exc
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(_CHUNK):
                yield decoder.decode(chunk)
            returncode = proc.wait()
            timed_out = timer.finished.is_set()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if timed_out:
            raise _no_answer(argv, timeout_s)
        if returncode != 0:
            errors.seek(0)
            raise _failure(argv, returncode, errors.read(4096).decode(errors="replace").strip())
        yield decoder.decode(b"", final=True)


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
        runner: runs a command (tests pass a fake, which then answers ``squeue --json`` too).
        timeout_s: per-command limit; slurmctld answers in milliseconds when healthy.
    """

    def __init__(self, runner: Runner = run_command, timeout_s: float = 15.0) -> None:
        self._run = runner
        self._timeout_s = timeout_s
        self._stream: Streamer = (
            stream_command if runner is run_command else lambda argv, t: iter((runner(argv, t),))
        )

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
        return parse_squeue_json(self._stream(["squeue", "--json"], self._timeout_s), job_id)

    def job_status(self, job_id: int) -> JobStatus | None:
        """The job's record from its own ``squeue`` query; None if slurmctld lost it.

        One job's query costs slurmctld and squeue the same at any queue length, where
        ``squeue --json`` on 22.05 lists every job it holds (0.3 s at 1,000 jobs, 1.7 s at
        7,000). A record this query cannot read exactly is not guessed at: ``job_info``
        answers instead.

        Raises:
            TransientError: slurmctld unreachable.
            MalformedSlurmOutput: squeue answered something this boundary cannot read.
        """
        fields = ",".join(f"{name}:{_FIELD_END}" for name in STATUS_FIELDS)
        argv = ["squeue", f"--jobs={job_id}", "--states=all", "--noheader", f"--Format={fields}"]
        try:
            status = parse_job_status(self._run(argv, self._timeout_s), job_id)
        except SlurmJobUnknown:
            return None
        if status is not None:
            return status
        info = self.job_info(job_id)
        return None if info is None else JobStatus.of(info)

    def jobs(self) -> dict[int, JobInfo]:
        """Every job slurmctld holds, by id, from one ``squeue --json``."""
        return parse_squeue_all(self._stream(["squeue", "--json"], self._timeout_s))

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

    def note(self, job: JobStatus, text: str) -> None:
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


# Each field of a one-job query ends with the ASCII unit separator. Users can put one in the
# fields they write (the job name, the comment, the paths), so a record is read only when it
# holds exactly one separator per field: a forged one makes the count wrong, never a field of
# someone else's choosing.
_FIELD_END = "\x1f"
STATUS_FIELDS = (
    "JobID", "ArrayJobID", "ArrayTaskID", "State", "Reason", "RestartCnt", "UserName", "UserID",
    "GroupID", "BatchHost", "NodeList", "tres-alloc", "Name", "Comment", "admin_comment",
    "STDOUT", "Partition", "NumCPUs", "WorkDir", "TimeLimit", "SubmitTime", "StartTime",
    "EndTime",
)  # fmt: skip
"""``admin_comment`` is spelt so (``AdminComment`` is refused by 22.05's squeue)."""

_TIME_LIMIT = re.compile(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)")
"""squeue's ``TimeLimit``: ``[days-][hours:]minutes:seconds``."""


@dataclass(frozen=True)
class JobStatus:
    """A job as its own ``squeue --jobs`` query reports it (``SlurmCtl.job_status``).

    Everything finishing a run and building its Pod read, the AdminComment (job_submit.lua's
    acceptance mark and the collector's notes, which users cannot write) included; the GPU
    indices are the listing's alone (``JobInfo``).
    """

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

    @classmethod
    def of(cls, job: JobStatus) -> JobStatus:
        """The same fields of any record (a ``JobInfo`` from the listing)."""
        return cls(**{field.name: getattr(job, field.name) for field in fields(cls)})


def _local_epoch(text: str) -> int | None:
    """A time in squeue's default form (local time, no zone) as epoch seconds; None if unset.

    Read in this process's time zone, which squeue (a child with the same environment) printed
    it in; in the hour a daylight-saving change repeats, the earlier reading is taken.
    """
    try:
        return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return None


def _time_limit_s(text: str) -> int | None:
    """``TimeLimit`` in seconds; None for no limit. Raises ValueError for anything else."""
    if text == "UNLIMITED":
        return None
    match = _TIME_LIMIT.fullmatch(text)
    if match is None:
        raise ValueError(text)
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def parse_job_status(text: str, job_id: int) -> JobStatus | None:
    """The record of ``squeue --jobs=<id> --Format=STATUS_FIELDS`` (each ending in U+001F).

    None when the answer is not exactly one record of this job (a separator in a user's
    field, an array's several tasks, no record, a value not in its field's form): the caller
    asks the structured listing.
    """
    if not text.endswith(_FIELD_END + "\n") or text.count(_FIELD_END) != len(STATUS_FIELDS):
        return None
    values = dict(zip(STATUS_FIELDS, text[: -len(_FIELD_END) - 1].split(_FIELD_END), strict=True))
    numbers = [values[k] for k in ("JobID", "RestartCnt", "UserID", "GroupID", "NumCPUs")]
    submitted = _local_epoch(values["SubmitTime"])
    if not all(n.isdigit() for n in numbers) or int(values["JobID"]) != job_id or not submitted:
        return None
    try:
        time_limit_s = _time_limit_s(values["TimeLimit"])
    except ValueError:
        return None
    # ArrayTaskID: "N/A" for a plain job, a number for one task, "1-2" for tasks not yet split.
    in_array = values["ArrayTaskID"] != "N/A" and values["ArrayJobID"].isdigit()
    array_job = int(values["ArrayJobID"]) if in_array else None
    array_task = int(values["ArrayTaskID"]) if values["ArrayTaskID"].isdigit() else None
    host = values["BatchHost"]
    node = values["NodeList"] if host.lower() in ("n/a", "(null)", "") else host
    tres = values["tres-alloc"]
    return JobStatus(
        job_id=job_id,
        state=values["State"],
        reason=_null(values["Reason"]),
        restarts=int(values["RestartCnt"]),
        name=values["Name"],
        user=values["UserName"],
        uid=int(values["UserID"]),
        gid=int(values["GroupID"]),
        partition=values["Partition"],
        node=node,
        cpus=int(values["NumCPUs"]),
        mem_mb=_tres_mem_mb(tres),
        gpus=gpu_count(tres),
        work_dir=values["WorkDir"] or "/",
        time_limit_s=time_limit_s,
        submit_time=submitted,
        start=_epoch_iso(_local_epoch(values["StartTime"])),
        end=_epoch_iso(_local_epoch(values["EndTime"])),
        array_job_id=array_job,
        array_task_id=array_task,
        comment=_null(values["Comment"]),
        admin_comment=_null(values["admin_comment"]),
        stdout=expand_output_pattern(
            values["STDOUT"],
            job_id=job_id,
            user=values["UserName"],
            name=values["Name"],
            array_job_id=array_job,
            array_task_id=array_task,
            node=node,
        ),
    )


class MalformedSlurmOutput(PermanentError):
    """A Slurm command answered, but not in the form this boundary parses."""


@dataclass(frozen=True)
class JobInfo(JobStatus):
    """A job as ``squeue --json`` lists it: every field is a JSON value, never split text."""

    stderr: str = ""
    """The --error path, patterns expanded; "" when it goes with stdout."""
    gpu_indices: str = ""
    """The allocated GPUs' indices as the prolog sees ``SLURM_JOB_GPUS`` (``0,1``); "" if none."""


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
        gpu_indices=gpu_indices_of(job.get("gres_detail")),
    )


def gpu_indices_of(detail: object) -> str:
    """``["gpu:2(IDX:0-1)"]`` (squeue --json's ``gres_detail``) → ``"0,1"``; "" if none."""
    found: list[str] = []
    for item in detail if isinstance(detail, list) else []:
        match = re.search(r"\(IDX:([0-9,\-]+)\)", item) if isinstance(item, str) else None
        if match is None or not item.startswith("gpu"):
            continue
        for part in match.group(1).split(","):
            low, _, high = part.partition("-")
            if low.isdigit() and (not high or high.isdigit()):
                found += [str(i) for i in range(int(low), int(high or low) + 1)]
    return ",".join(found)


_JSON = json.JSONDecoder()


class _JsonStream:
    """A JSON document read from text chunks one value at a time (never the whole of it)."""

    def __init__(self, chunks: Iterable[str]) -> None:
        self._chunks = iter(chunks)
        self._text = ""
        self._at = 0
        self._ended = False

    def _more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            self._ended = True
            return False
        self._text = self._text[self._at :] + chunk
        self._at = 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace, without taking it ("" at the end)."""
        while True:
            while self._at < len(self._text) and self._text[self._at] in " \t\n\r":
                self._at += 1
            if self._at < len(self._text):
                return self._text[self._at]
            if not self._more():
                return ""

    def take(self, char: str) -> None:
        """Take ``char``, the next character that is not whitespace."""
        if self.peek() != char:
            raise ValueError(f"{char!r} expected")
        self._at += 1

    def value(self) -> object:
        """The next JSON value.

        A value that ends a chunk is taken only once more text or the end shows that it is
        complete: ``12`` may go on as ``123``.
        """
        self.peek()
        while True:
            try:
                value, end = _JSON.raw_decode(self._text, self._at)
                if end < len(self._text) or self._ended:
                    self._at = end
                    return value
            except ValueError:
                if self._ended:
                    raise
            self._more()


def _squeue_jobs(chunks: Iterable[str]) -> Iterator[dict[str, object]]:
    """The job objects of ``squeue --json``, decoded one at a time as the text comes.

    Slurm 22.05 lists every job slurmctld holds (thousands after a burst, with their scripts'
    environments: 22 MB for 7,000 jobs), and reading and decoding the whole answer at once
    held it all in memory together, up to three times over: the services' resident memory
    grew by that and stayed there. One job object at a time keeps only what the caller keeps.
    """
    doc = _JsonStream(chunks)
    try:
        doc.take("{")
        while doc.peek() != "}":
            key = doc.value()
            doc.take(":")
            if key == "jobs" and doc.peek() == "[":
                doc.take("[")
                while doc.peek() != "]":
                    job = doc.value()
                    if isinstance(job, dict):
                        yield job
                    if doc.peek() != "]":
                        doc.take(",")
                return
            doc.value()
            if doc.peek() != "}":
                doc.take(",")
    except ValueError as exc:
        raise MalformedSlurmOutput(f"squeue --json: not JSON ({exc})") from exc
    raise MalformedSlurmOutput("squeue --json: no 'jobs' list")


def _chunks_of(source: str | Iterable[str]) -> Iterable[str]:
    return (source,) if isinstance(source, str) else source


def parse_squeue_json(source: str | Iterable[str], job_id: int) -> JobInfo | None:
    """The job ``job_id`` in ``squeue --json`` output, or None if slurmctld does not list it.

    Slurm 22.05's ``squeue --json`` ignores ``-j``/``-u`` and lists every job it holds, so the
    job is picked out here by its id.

    Raises:
        MalformedSlurmOutput: not squeue's JSON, or the job's object is not readable.
    """
    for job in _squeue_jobs(_chunks_of(source)):
        if job.get("job_id") == job_id:
            return job_info_of(job)
    return None


def parse_squeue_all(source: str | Iterable[str]) -> dict[int, JobInfo]:
    """Every readable job of ``squeue --json`` output, by id (unreadable ones are left out).

    Raises:
        MalformedSlurmOutput: not squeue's JSON.
    """
    found: dict[int, JobInfo] = {}
    for job in _squeue_jobs(_chunks_of(source)):
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


COMMENT_PREFIX = "slurmk8s-key="
"""The NAS door's submission key travels in the job's comment (``--comment``)."""
DUPLICATE_TEXT = "slurm-k8s: this submission key was submitted moments ago"
"""job_submit.lua's refusal of a key it accepted moments ago (``M.DUPLICATE_TEXT``)."""


class SubmitRefused(PermanentError):
    """sbatch refused the job; ``reasons`` are its error lines, without the prefix."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


class Submitter:
    """sbatch as a file's owner, and finding a submission again by its key.

    sbatch runs as the owner (never as root on user content: ``as_owner``), reads the
    exact validated bytes from stdin (no re-read of the file), and gets a clean environment:
    sbatch lets ``SBATCH_*`` variables override script options and exports its environment
    into the job, so the service's own variables must not leak in. The key is looked up with
    ``squeue``/``sacct`` filtered by the owner (slurmctld filters; the comment is only
    compared, never trusted for identity).

    Args:
        timeout_s: how long sbatch may take.
        query_timeout_s: how long squeue, sacct and scontrol may take.
        lookback_days: how far back accounting is searched for a key.
        slurm_conf: SLURM_CONF to pass on (the only Slurm variable the clients need).
        trace: the current W3C ``traceparent``, if any, carried in the comment after the key
            (``shared.jobtrace``) so the job's prolog and epilog continue the trace.
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        query_timeout_s: float,
        lookback_days: int,
        slurm_conf: str | None = None,
        trace: Callable[[], str | None] | None = None,
    ) -> None:
        self._trace = trace
        self._timeout_s = timeout_s
        self._query_timeout_s = query_timeout_s
        self._lookback_days = lookback_days
        self._slurm_conf = slurm_conf if slurm_conf is not None else os.environ.get("SLURM_CONF")

    def _env(self, user: str | None = None, home: Path | None = None) -> dict[str, str]:
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
        if self._slurm_conf:
            env["SLURM_CONF"] = self._slurm_conf
        if user is not None:
            env |= {"USER": user, "LOGNAME": user}
        if home is not None:
            env["HOME"] = str(home)
        return env

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        """Run sbatch as ``user`` in ``cwd`` with the script on stdin.

        Raises:
            TransientError: the controller could not be reached or sbatch timed out.
            SubmitRefused: sbatch (or job_submit.lua) refused the job.
        """
        try:
            owner = pwd.getpwnam(user)
        except KeyError:
            raise SubmitRefused([f"there is no account {user!r} on this host"]) from None
        argv = [
            "sbatch", "--parsable",
            f"--comment={with_traceparent(COMMENT_PREFIX + key, self._trace and self._trace())}",
        ]  # fmt: skip
        if job_name:
            argv.append(f"--job-name={job_name}")
        # The job's environment stays what runuser gave it: HOME from the account, not cwd.
        env = self._env(owner.pw_name, Path(owner.pw_dir))
        done = exec_command(as_owner(owner, argv), self._timeout_s, stdin=script, cwd=cwd, env=env)
        stderr = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            if DUPLICATE_TEXT in stderr:
                # An earlier attempt of ours reached slurmctld after all; the retry finds
                # its job by the key instead of submitting.
                raise TransientError("slurmctld already has this submission", delay=2)
            if is_transient(stderr):
                raise TransientError(f"sbatch: {stderr.strip()}")
            raise SubmitRefused(error_lines(stderr) or [f"sbatch exited with {done.returncode}"])
        first = done.stdout.decode(errors="replace").strip().split(";")[0]
        if not first.isdigit():
            raise SubmitRefused([f"sbatch printed no job id: {first!r} {stderr.strip()}"])
        return int(first)

    def find_job(self, *, user: str, key: str, attempted: bool) -> int | None:
        """Look the key up in the queue, then in accounting.

        Raises:
            TransientError: Slurm could not be asked where the answer matters (we must not
                guess "not found" for a key an earlier attempt may have submitted).
        """
        # --states=all: a job that already ended is still in slurmctld's memory (MinJobAge)
        # before accounting may have it; the default states would miss exactly that job.
        queue = self._query(
            ["squeue", "--all", "--states=all", "--noheader", "--format=%i|%k", "-u", user]
        )
        found = match_key(queue, key)
        if found is not None:
            return found
        argv = ["sacct", "-X", "-n", "-P", "--format=JobID,Comment", "-u", user]
        try:
            history = self._query([*argv, "-S", f"now-{self._lookback_days}days"])
        except TransientError:
            # slurmdbd down: if no sbatch ever ran with this key, there is nothing to find,
            # and new submissions should not wait for accounting to come back.
            if attempted:
                raise
            return None
        return match_key(history, key)

    def stdout_path(self, job_id: int, *, user: str, name: str) -> str | None:
        """Where the job's output goes, if slurmctld still knows the job.

        ``squeue --jobs=<id> --Format=STDOUT:0`` prints that one job's path pattern and nothing
        else (6 ms), where ``squeue --json`` ignores ``--jobs`` on 22.05 and prints every job it
        holds (0.3 s with a hundred, growing with the queue). The path says where to look and
        decides nothing. 22.05 prints it unexpanded; ``user`` and ``name`` (the job's owner and
        name, known to the caller who submitted it) fill ``%u`` and ``%x``.
        """
        try:
            out = self._query(
                ["squeue", "--noheader", f"--jobs={job_id}", "--Format=STDOUT:0"]
            ).strip()
        except ServiceError:
            return None
        if not out or "\n" in out:
            return None
        return expand_output_pattern(out, job_id=job_id, user=user, name=name)

    def _query(self, argv: list[str]) -> str:
        done = exec_command(argv, self._query_timeout_s, env=self._env())
        if done.returncode != 0:
            raise TransientError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")


def key_of(comment: str) -> str | None:
    """The submission key a job's comment carries, or None.

    The key comes first; a traceparent (the validator's) or "; reason=…" (the collector's)
    may follow it.
    """
    first = comment.strip().split(";")[0].strip()
    return first.removeprefix(COMMENT_PREFIX) if first.startswith(COMMENT_PREFIX) else None


def match_key(listing: str, key: str) -> int | None:
    """The job id in ``id|comment`` lines whose comment carries the key."""
    for line in listing.splitlines():
        job, _, comment = line.strip().partition("|")
        if key_of(comment) == key:
            # Array jobs are listed as 123_4 or 123_[1-9]; the submission is job 123.
            base = job.split("_")[0].split("+")[0]
            if base.isdigit():
                return int(base)
    return None
