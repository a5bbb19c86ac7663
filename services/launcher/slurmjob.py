"""The launcher's Slurm boundary: what a running job was given, its original script, its notes.

Three commands, all through ``shared.slurmctl.run_command`` (so "cannot reach slurmctld" is a
``TransientError`` and "invalid job id" is ``SlurmJobUnknown``):

- ``scontrol -o show job <id>`` → ``JobDetails`` (pure parsing, ``details_of``). Slurm 22.05
  shows StdOut/StdErr with ``%j %x %u %A %a`` already expanded (seen on the lab); the shared
  expander runs anyway for the forms it leaves alone.
- ``scontrol write batch_script <id> -`` → the stored batch script on stdout (checked on 22.05),
  from which ``extract_original_script`` recovers the user's script inside our wrapper.
- ``scontrol update JobId=<id> AdminComment=…`` → the Pod's name and phase on the job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from shared.jobscript.resources import size_mb
from shared.slurmctl import (
    JobRecord,
    Runner,
    SlurmCtl,
    SlurmJobUnknown,
    parse_record,
    run_command,
)

RUNNABLE_STATES = frozenset({"RUNNING", "CONFIGURING"})
"""States in which a job.started event still calls for a Pod."""


@dataclass(frozen=True)
class JobDetails:
    """A job as slurmctld allocated it: identity, resources, files, limits."""

    job_id: int
    state: str
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
    stdout: str
    stderr: str
    time_limit_s: int | None
    """None: no limit (UNLIMITED / INFINITE)."""
    array_job_id: int | None = None
    array_task_id: int | None = None
    admin_comment: str = ""

    @property
    def runnable(self) -> bool:
        """The job is starting or running (a Pod makes sense)."""
        return self.state in RUNNABLE_STATES


_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def time_limit_seconds(text: str) -> int | None:
    """Slurm's TimeLimit (``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``) in seconds.

    Returns None for UNLIMITED, INFINITE, Partition_Limit or anything unreadable: the safety
    net (activeDeadlineSeconds) is simply left out then.
    """
    match = _TIME.match(text.strip())
    if match is None:
        return None
    days, a, b, c = (int(g) if g is not None else None for g in match.groups())
    if days is not None:
        # D-HH[:MM[:SS]]
        hours, minutes, seconds = a or 0, b or 0, c or 0
    elif c is not None:
        hours, minutes, seconds = a or 0, b or 0, c
    elif b is not None:
        hours, minutes, seconds = 0, a or 0, b
    else:
        hours, minutes, seconds = 0, a or 0, 0
    return (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def tres_value(tres: str, key: str) -> str:
    """One item of a TRES string (``cpu=2,mem=1G,gres/gpu=1``), "" when absent."""
    for item in tres.split(","):
        name, _, value = item.partition("=")
        if name == key:
            return value
    return ""


def _int(text: str, default: int = 0) -> int:
    return int(text) if text.isdigit() else default


def details_of(fields: Mapping[str, str]) -> JobDetails:
    """Reduce one ``scontrol -o show job`` record to what a Pod needs (pure).

    Raises:
        ValueError: the record lacks the owner's uid/gid (not a job record).
    """
    record = JobRecord(fields)
    if record.uid is None or record.gid is None:
        raise ValueError(f"job record without UserId/GroupId: {dict(fields)!r:.200}")
    tres = record.get("TRES") or record.get("AllocTRES")
    mem = tres_value(tres, "mem") or record.get("MinMemoryNode") or "0"
    try:
        mem_mb = size_mb(mem)
    except ValueError:
        mem_mb = 0
    gpus = _int(tres_value(tres, "gres/gpu"))
    cpus = _int(record.get("NumCPUs"), 1) or 1
    array_job = record.get("ArrayJobId")
    array_task = record.get("ArrayTaskId")
    return JobDetails(
        job_id=record.job_id,
        state=record.state,
        restarts=record.restarts,
        name=record.get("JobName"),
        user=record.user,
        uid=record.uid,
        gid=record.gid,
        partition=record.get("Partition"),
        node=record.get("BatchHost") or record.get("NodeList"),
        cpus=cpus,
        mem_mb=mem_mb,
        gpus=gpus,
        work_dir=record.get("WorkDir") or "/",
        stdout=record.stdout,
        stderr=record.stderr or record.stdout,
        time_limit_s=time_limit_seconds(record.get("TimeLimit")),
        array_job_id=int(array_job) if array_job.isdigit() else None,
        array_task_id=int(array_task) if array_task.isdigit() else None,
        admin_comment=record.get("AdminComment"),
    )


class SlurmJobs:
    """``SlurmPort`` over the real commands.

    Args:
        runner: runs a command (tests pass a fake).
        timeout_s: per-command limit; a healthy slurmctld answers in milliseconds.
    """

    def __init__(self, runner: Runner = run_command, timeout_s: float = 15.0) -> None:
        self._run = runner
        self._timeout_s = timeout_s
        self._ctl = SlurmCtl(runner, timeout_s)

    def job(self, job_id: int) -> JobDetails | None:
        """The job as slurmctld sees it, or None when it no longer knows it."""
        try:
            out = self._run(["scontrol", "-o", "show", "job", str(job_id)], self._timeout_s)
        except SlurmJobUnknown:
            return None
        for line in out.splitlines():
            fields = parse_record(line)
            if fields.get("JobId") == str(job_id):
                return details_of(fields)
        return None

    def batch_script(self, job_id: int) -> str:
        """The batch script slurmctld stored for the job (our wrapper, for #K8S_ jobs)."""
        return self._run(["scontrol", "write", "batch_script", str(job_id), "-"], self._timeout_s)

    def set_admin_comment(self, job_id: int, text: str) -> None:
        """Record ``text`` as the job's AdminComment (one argv word, spaces included)."""
        self._ctl.update_job(job_id, AdminComment=text)
