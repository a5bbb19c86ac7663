"""``slurmk8s status`` and ``slurmk8s logs``: where jobs are, and what they printed.

Status reads one ``squeue --json`` (every job slurmctld holds) and, for a job it no longer
holds, accounting. The Pod's name, phase and exit come from the job's AdminComment, where the
launcher and the collector's observer note them (``pod=<ns>/<name> phase=<phase> …``), so a
user needs no Kubernetes credentials to see them. Rows are pure data, rendered as a table for
people or as JSON for scripts.

Logs reads the job's output file with the caller's own permissions (the CLI runs as the user;
nothing is read on their behalf), and ``-f`` follows it until the job has ended and the file
stops growing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from shared.errors import ServiceError
from shared.slurmctl import TERMINAL_STATES, AccountingRecord, JobInfo, SlurmCtl, gpu_count

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class JobStatus:
    """One row of ``slurmk8s status``."""

    job_id: int
    user: str
    name: str
    state: str
    reason: str
    node: str
    gpus: int
    pod: str
    pod_phase: str
    pod_exit: str
    output: str
    submitted: str
    started: str
    ended: str


def pod_fields(admin_comment: str) -> dict[str, str]:
    """``pod``, ``phase``, ``exit``, ``reason`` from the launcher's AdminComment note."""
    fields: dict[str, str] = {}
    for part in admin_comment.split(";"):
        for token in part.split():
            key, sep, value = token.partition("=")
            if sep and key in ("pod", "phase", "exit", "reason"):
                fields[key] = value
    return fields


def _iso(epoch: int) -> str:
    # squeue's other times are UTC without an offset; the same here.
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S") if epoch else ""


def _known(value: str) -> str:
    return "" if value in ("", "None", "Unknown", "None assigned") else value


def from_info(info: JobInfo) -> JobStatus:
    """A row from slurmctld's record."""
    pod = pod_fields(info.admin_comment)
    ended = info.state in TERMINAL_STATES
    return JobStatus(
        job_id=info.job_id,
        user=info.user,
        name=info.name,
        state=info.state,
        reason=info.reason,
        node=info.node,
        gpus=info.gpus,
        pod=pod.get("pod", ""),
        pod_phase=pod.get("phase", ""),
        pod_exit=pod.get("exit", ""),
        output=info.stdout,
        submitted=_iso(info.submit_time),
        started=info.start if info.state != "PENDING" else "",
        # Before the end, squeue's end time is when the time limit would end the job.
        ended=info.end if ended else "",
    )


def from_accounting(job_id: int, record: AccountingRecord) -> JobStatus:
    """A row from accounting, for a job slurmctld no longer holds (no output path there)."""
    return JobStatus(
        job_id=job_id,
        user=record.user,
        name="",
        state=record.base_state,
        reason="",
        node=_known(record.node_list),
        gpus=gpu_count(record.alloc_tres),
        pod="",
        pod_phase="",
        pod_exit=record.exit_code.split(":", 1)[0],
        output="",
        submitted="",
        started=_known(record.start),
        ended=_known(record.end),
    )


def collect(
    ctl: SlurmCtl, *, job_id: int | None = None, user: str | None = None
) -> list[JobStatus]:
    """Rows for one job, one user's jobs, or every job (both None).

    Raises:
        ServiceError: Slurm could not be asked.
    """
    jobs = ctl.jobs()
    if job_id is not None:
        if job_id in jobs:
            return [from_info(jobs[job_id])]
        record = ctl.accounting(job_id)
        return [] if record is None else [from_accounting(job_id, record)]
    rows = [from_info(info) for info in jobs.values() if user is None or info.user == user]
    return sorted(rows, key=lambda row: row.job_id)


_COLUMNS = (
    ("JOBID", "job_id"),
    ("USER", "user"),
    ("STATE", "state"),
    ("REASON", "reason"),
    ("NODE", "node"),
    ("GPUS", "gpus"),
    ("POD", "pod_phase"),
    ("EXIT", "pod_exit"),
    ("SUBMITTED", "submitted"),
    ("STARTED", "started"),
    ("ENDED", "ended"),
    ("OUTPUT", "output"),
)


def table(rows: Sequence[JobStatus]) -> str:
    """Aligned columns, ``-`` for empty cells."""
    cells = [[h for h, _ in _COLUMNS]]
    for row in rows:
        cells.append([str(getattr(row, attr)) or "-" for _, attr in _COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in cells
    )


def status_command(args: argparse.Namespace, ctl: SlurmCtl | None = None) -> int:
    """``slurmk8s status [JOBID | --user NAME | --all]``; exit 1 when a named job is unknown."""
    ctl = ctl or SlurmCtl()
    user = None if args.all or args.jobid is not None else (args.user or _me())
    try:
        rows = collect(ctl, job_id=args.jobid, user=user)
    except ServiceError as exc:
        print(f"slurmk8s: cannot ask Slurm: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    elif rows:
        print(table(rows), end="")
    else:
        print("no jobs" if args.jobid is None else f"job {args.jobid}: unknown to Slurm")
    return EXIT_FAILED if args.jobid is not None and not rows else EXIT_OK


def _me() -> str:
    import getpass

    return getpass.getuser()


def follow(
    path: str,
    out: IO[bytes],
    *,
    ended: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
    interval_s: float = 0.5,
) -> None:
    """Copy ``path`` to ``out`` as it grows, until the job has ended and nothing more came."""
    offset = 0
    while True:
        done = ended()  # asked before reading: what the job wrote before it ended is read
        for chunk in _read_from(path, offset):
            out.write(chunk)
            offset += len(chunk)
        out.flush()
        if done:
            return
        sleep(interval_s)


def _read_from(path: str, offset: int) -> Iterable[bytes]:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            while chunk := handle.read(65536):
                yield chunk
    except FileNotFoundError:
        return  # not created yet (the job has not started)


def logs_command(args: argparse.Namespace, ctl: SlurmCtl | None = None) -> int:
    """``slurmk8s logs JOBID [-f]``: print the job's output; ``-f`` follows it."""
    ctl = ctl or SlurmCtl()
    try:
        info = ctl.job_info(args.jobid)
    except ServiceError as exc:
        print(f"slurmk8s: cannot ask Slurm: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if info is None:
        print(
            f"slurmk8s: Slurm no longer holds job {args.jobid}; its output path is in its "
            "receipt (submitted/<name>.receipt.json) or its run summary",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if not args.follow and not os.path.exists(info.stdout):
        print(f"slurmk8s: {info.stdout} does not exist (yet): job is {info.state}", file=sys.stderr)
        return EXIT_FAILED

    def ended() -> bool:
        try:
            now = ctl.job_info(args.jobid)
        except ServiceError:
            return False  # a slurmctld hiccup is not the job's end
        return now is None or now.state in TERMINAL_STATES

    try:
        follow(info.stdout, sys.stdout.buffer, ended=ended if args.follow else lambda: True)
    except PermissionError:
        print(f"slurmk8s: {info.stdout}: permission denied", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def add_status_parsers(commands: Any) -> None:
    """Add ``status`` and ``logs`` to the CLI's subparsers."""
    status = commands.add_parser("status", help="jobs' Slurm state, Pod, node, output")
    which = status.add_mutually_exclusive_group()
    which.add_argument("jobid", type=int, nargs="?", metavar="JOBID")
    which.add_argument("--user", help="this user's jobs (default: yours)")
    which.add_argument("--all", action="store_true", help="every job slurmctld holds")
    status.add_argument("--json", action="store_true", help="JSON for scripts")
    status.set_defaults(func=status_command)
    logs = commands.add_parser("logs", help="a job's output; -f follows it while it runs")
    logs.add_argument("jobid", type=int, metavar="JOBID")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")
    logs.set_defaults(func=logs_command)
