"""What the validator does with one ``file.detected`` event; every dependency is passed in.

Steps, each recorded in the journal before the next, so a redelivery resumes instead of
repeating: vet the file (kind and size by ``lstat`` before a byte is read, owner, content still
as detected) → check it → find or make the Slurm job (key looked up in the journal; in Slurm
too when an sbatch may have run for it: the journal says one started, or the file is older
than the journal) → choose a free name → move → write the receipt or error file →
publish. A stale event (the file changed or went
away before we saw it) is acknowledged and dropped: the watcher publishes the new content itself.

A file whose event runs out of retries (Slurm or the NAS failing for about an hour) is not left
in ``submit/`` without a word: ``dead_lettered`` parks it in ``failed/`` with an ``.error`` saying
the system could not submit it and that an operator was told, and journals where it went. When
the operator replays the event (``slurmk8s replay``), the handler takes the file from there.

The submission key is the first 24 hex digits of sha256(path, content hash, mtime): the same
bytes dropped again later at the same path are a new submission, a redelivery is not. A file
over ``max_script_bytes`` is never read, here or in the watcher: its event's ``sha256`` is the
watcher's digest of the file's identity (path, inode, size, mtime), so its key is just as stable,
and it is still "the file of the event" while its size and mtime are the event's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.validator.filing import (
    JobFile,
    Journal,
    move_no_clobber,
    read_job_file,
    unique_destination,
    write_for_owner,
)
from services.validator.submitting import Slurm
from shared.config import NasSettings
from shared.errors import PermanentError, TransientError
from shared.jobscript import Policy, check_script, format_problem
from shared.jobscript.parsing import ParsedScript
from shared.jobscript.validation import SyntaxChecker, bash_syntax, canonical
from shared.logs import get_logger
from shared.messages import (
    Envelope,
    FileDetected,
    JobRejected,
    JobSubmitted,
    Problem,
    decode,
    encode,
    shown,
)
from shared.receipts import ReceiptBook
from shared.slurmctl import SubmitRefused, expand_output_pattern

_log = get_logger(__name__)
RECEIPT_SUFFIX = ".receipt.json"
ERROR_SUFFIX = ".error"
_COMPANIONS = (RECEIPT_SUFFIX, ERROR_SUFFIX)
_NOT_A_FILE = {
    "symlink": "the file is a symbolic link, not a regular file; links are never followed: "
    "copy the file itself",
    "directory": "this is a folder inside a sub-folder of submit/, not a regular file; only "
    "files directly in submit/ or in one sub-folder of it are job files, so nothing in this "
    "folder was submitted: move the job files up",
    "fifo": "this is a named pipe (FIFO), not a regular file; copy the job script itself",
    "other": "this is a socket or a device, not a regular file; copy the job script itself",
}
"""Why each kind of entry that is not a regular file is refused, in its owner's words."""


def _no_fault(_step: str) -> None:
    """Production: crash seams do nothing."""


@dataclass(frozen=True)
class ValidatorDeps:
    """Everything the handler touches outside its arguments."""

    policy: Policy
    nas: NasSettings
    slurm: Slurm
    journal: Journal
    accounts: Callable[[int], str | None]
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    syntax: SyntaxChecker | None = bash_syntax
    fault: Callable[[str], None] = _no_fault
    home_of: Callable[[str], Path] | None = None  # default: <NAS>/home/<user>


def submission_key(event: FileDetected) -> str:
    """Stable for redeliveries of one drop; different for a new drop of the same bytes."""
    text = f"{event.path}\0{event.sha256}\0{event.mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ValidatorHandler:
    """The validator's handler: ``handler(envelope) -> follow-up envelopes``."""

    def __init__(self, deps: ValidatorDeps) -> None:
        self._deps = deps

    def __call__(self, envelope: Envelope) -> Sequence[Envelope]:
        """Handle one ``file.detected`` event.

        Raises:
            PermanentError: the message is not a ``file.detected`` event.
            TransientError: Slurm or the NAS is not available right now; retry later.
        """
        event = envelope.body
        if not isinstance(event, FileDetected):
            raise PermanentError(f"validator got a {event.type} event")
        key = submission_key(event)
        with self._deps.journal.locked(key):
            return self._handle(event, key)

    def _handle(self, event: FileDetected, key: str) -> Sequence[Envelope]:
        log = _log.bind(key=key, path=event.path)
        record = self._deps.journal.read(key)
        if "event" in record:
            log.info("already handled; publishing its outcome again")
            return [decode(record["event"].encode())]
        if "destination" in record:
            return self._finish(event, key, record)
        try:
            job = read_job_file(_source(event, record), self._deps.policy.max_script_bytes)
        except FileNotFoundError:
            log.info("stale event: the file is gone")
            return []
        if _changed(job, event):
            log.info("stale event: the file changed since it was detected")
            return []
        user, problems = self._vet(job)
        if problems or user is None:
            return self._reject(event, key, job, problems)
        assert job.data is not None  # _vet refuses files it could not read whole
        problems, parsed = self._check(job.data, user)
        if problems or parsed is None:
            return self._reject(event, key, job, problems)
        return self._submit(event, key, job, user, record, parsed)

    def dead_lettered(self, envelope: Envelope, reason: str) -> None:
        """Answer the owner of a file whose event is being dead-lettered.

        The file is parked in ``failed/`` (never overwriting) with an ``.error`` saying the
        system could not submit it, why, and that an operator was told and will resubmit it;
        the journal records where it went, so a replayed event takes it from there. A file
        whose outcome is already decided (only filing it failed), that is gone, or that
        changed since the event (the watcher publishes its new content) is left as it is.

        Raises:
            TransientError: the NAS refused the move or the write (the consumer logs it).
        """
        event = envelope.body
        if not isinstance(event, FileDetected):
            return
        key = submission_key(event)
        deps = self._deps
        with deps.journal.locked(key):
            record = deps.journal.read(key)
            if {"event", "destination", "parked"} & record.keys():
                return
            source = Path(event.path)
            try:
                job = read_job_file(source, deps.policy.max_script_bytes)
            except FileNotFoundError:
                return
            if _changed(job, event):
                return
            parked = unique_destination(deps.nas.failed_dir, source.name, _COMPANIONS)
            deps.journal.update(key, parked=str(parked))
            move_no_clobber(source, parked)
            write_for_owner(
                parked.with_name(parked.name + ERROR_SUFFIX),
                _parked_text(source.name, reason),
                uid=job.uid,
                gid=job.gid,
            )
        _log.warning("file parked: its event is dead-lettered", key=key, parked=str(parked))

    def _vet(self, job: JobFile) -> tuple[str | None, list[Problem]]:
        """The owner's name and what makes the file unacceptable whatever it says."""
        policy = self._deps.policy
        if job.kind in _NOT_A_FILE:
            return None, [Problem(line=0, message=_NOT_A_FILE[job.kind])]
        if job.kind == "hardlink":
            return None, [Problem(line=0, message="the file has other hard links; copy it instead")]
        user = self._deps.accounts(job.uid)
        if user is None:
            return None, [
                Problem(
                    line=0, message=f"the file is owned by uid {job.uid}, which has no account here"
                )
            ]
        if job.uid == 0:
            if not policy.allow_root_owned_files:
                return None, [
                    Problem(
                        line=0,
                        message="the file is owned by root; jobs run as the file's owner, "
                        "so copy it in as yourself",
                    )
                ]
        elif policy.system_account(job.uid):
            return None, [
                Problem(
                    line=0,
                    message=f"the file is owned by {user} (uid {job.uid}); files of system "
                    "accounts are not submitted",
                )
            ]
        if job.data is None:
            return user, [
                Problem(
                    line=0,
                    message=f"the file is {_size(job.size)}; the limit is "
                    f"{_size(policy.max_script_bytes)}; it was not read",
                )
            ]
        return user, []

    def _check(self, data: bytes, user: str) -> tuple[list[Problem], ParsedScript | None]:
        """Every problem with the script of ``user``'s file, and the script as sbatch reads it."""
        policy = self._deps.policy
        home = self._home(user)
        problems = []
        if not home.is_dir():
            problems.append(
                Problem(
                    line=0,
                    message=f"your NAS home folder {home} does not exist; ask an administrator",
                )
            )
        verdict = check_script(data, policy, user=user, home=str(home), syntax=None)
        if (problems or verdict.problems) and self._deps.syntax is not None:
            # A file refused anyway lists its shell syntax errors too. An acceptable one's are
            # job_submit.lua's to report (it runs bash -n for every door, this one included,
            # and its "line N:" answer reaches the .error file), so bash runs once per job.
            verdict = check_script(
                data, policy, user=user, home=str(home), syntax=self._deps.syntax
            )
        return problems + list(verdict.problems), verdict.parsed

    def _home(self, user: str) -> Path:
        """Where relative paths resolve and sbatch runs: the user's NAS home."""
        if self._deps.home_of is not None:
            return self._deps.home_of(user)
        return self._deps.nas.nas_root / "home" / user

    def _reject(
        self, event: FileDetected, key: str, job: JobFile, problems: Sequence[Problem]
    ) -> Sequence[Envelope]:
        if str(job.path) == self._deps.journal.read(key).get("parked"):
            destination = job.path  # parked in failed/ already: its .error is rewritten
        else:
            destination = unique_destination(
                self._deps.nas.failed_dir, Path(event.path).name, _COMPANIONS
            )
        record = self._deps.journal.update(
            key,
            outcome="rejected",
            destination=str(destination),
            uid=job.uid,
            gid=job.gid,
            kind=job.kind,
            problems=[[p.line, shown(p.message)] for p in problems],
        )
        return self._finish(event, key, record)

    def _submit(
        self,
        event: FileDetected,
        key: str,
        job: JobFile,
        user: str,
        record: dict[str, Any],
        parsed: ParsedScript,
    ) -> Sequence[Envelope]:
        deps = self._deps
        assert job.data is not None
        job_id = record.get("job_id")
        attempted = "sbatch_started_at" in record
        if job_id is None and (attempted or self._older_than_journal(job)):
            job_id = deps.slurm.find_job(user=user, key=key, attempted=attempted)
        if job_id is None:
            # Recorded before sbatch runs: from now on a lost answer means "ask Slurm".
            deps.journal.update(key, sbatch_started_at=deps.now().isoformat())
            try:
                job_id = deps.slurm.submit(
                    job.data,
                    user=user,
                    key=key,
                    cwd=self._home(user),
                    job_name=_default_job_name(parsed, event.path),
                )
            except SubmitRefused as exc:
                problems = sorted(map(_sbatch_problem, exc.reasons), key=lambda p: p.line)
                return self._reject(event, key, job, problems)
            deps.fault("after-sbatch")
        submitted_at = record.get("submitted_at") or deps.now().isoformat()
        name = _job_name(parsed, event.path)
        home = str(self._home(user))
        output = (
            squeue_output(parsed, job_id=job_id, user=user, cwd=home, name=name)
            or deps.slurm.stdout_path(job_id, user=user, name=name)
            or expand_output(parsed, job_id=job_id, user=user, home=home, path=event.path)
        )
        destination = unique_destination(deps.nas.submitted_dir, Path(event.path).name, _COMPANIONS)
        # The job id and the outcome in one write (each is an fsync on the NAS, on the way to
        # the receipt): a crash or a Slurm error before it leaves "sbatch may have run", and
        # the key is looked up in Slurm, as after a crash right after sbatch.
        record = deps.journal.update(
            key,
            job_id=job_id,
            submitted_at=submitted_at,
            user=user,
            outcome="submitted",
            destination=str(destination),
            uid=job.uid,
            gid=job.gid,
            kind=job.kind,
            output_path=shown(output),
            k8s_script=shown(_k8s_script(parsed)),
        )
        deps.fault("after-journal")
        return self._finish(event, key, record)

    def _older_than_journal(self, job: JobFile) -> bool:
        """Whether an earlier journal, since lost, may have submitted this file.

        The journal records ``sbatch_started_at`` before any sbatch, so with the journal intact
        "no record" means "never tried", and Slurm is not asked (its ``squeue --states=all`` and
        ``sacct`` cost grows with the queue and the user's history). A journal only knows the
        files it saw: one whose mtime or ctime (the kernel's, which a user cannot set back) is
        older than the journal's birth may have been handled by a journal that was lost, so
        Slurm is asked for it as before.
        """
        # Equal counts as older: timestamps are coarse (a clock tick), ties are looked up.
        return min(job.mtime_ns, job.ctime_ns) <= self._deps.journal.born_ns()

    def _finish(self, event: FileDetected, key: str, record: dict[str, Any]) -> list[Envelope]:
        """Move the file to its recorded destination, write its companion, publish."""
        deps = self._deps
        source, destination = _source(event, record), Path(record["destination"])
        if (
            source != destination
            and os.path.lexists(source)
            and self._still_the_same(source, event, record["kind"])
        ):
            destination = self._move(source, destination, key)
        if "parked" in record and record["outcome"] == "submitted":
            with contextlib.suppress(FileNotFoundError):  # the "could not submit" notice
                os.unlink(record["parked"] + ERROR_SUFFIX)
        deps.fault("after-move")
        uid, gid = int(record["uid"]), int(record["gid"])
        body: JobSubmitted | JobRejected
        if record["outcome"] == "submitted":
            receipt = destination.with_name(destination.name + RECEIPT_SUFFIX)
            body = JobSubmitted(
                job_id=int(record["job_id"]),
                user=record["user"],
                uid=uid,
                source_path=event.path,
                receipt_path=str(receipt),
                submission_key=key,
                output_path=record["output_path"],
                submitted_at=datetime.fromisoformat(record["submitted_at"]),
            )
            fields = _receipt_fields(body, event, destination, record.get("k8s_script", ""))
            ReceiptBook(deps.nas).open(body.job_id, receipt, uid=uid, gid=gid, fields=fields)
        else:
            problems = tuple(Problem(line=line, message=msg) for line, msg in record["problems"])
            error = destination.with_name(destination.name + ERROR_SUFFIX)
            body = JobRejected(
                source_path=event.path,
                failed_path=str(destination),
                error_path=str(error),
                sha256=event.sha256,
                problems=problems,
            )
            write_for_owner(error, _error_text(event, problems), uid=uid, gid=gid)
        envelope = Envelope.wrap(body, occurred_at=deps.now())
        deps.journal.update(key, event=encode(envelope).decode())
        _log.info(
            "job file filed",
            key=key,
            outcome=record["outcome"],
            destination=str(destination),
            job_id=record.get("job_id"),
        )
        return [envelope]

    def _move(self, source: Path, destination: Path, key: str) -> Path:
        """Move to the journalled name; if another file took it meanwhile, to a new free one.

        Several workers (or validators) file at once: two files of the same name (from two
        sub-folders, or dropped again) can be given the same free name before either moved.
        The move never overwrites; the loser journals a new name first, then moves there.
        """
        for _ in range(100):
            try:
                move_no_clobber(source, destination)
                return destination
            except FileExistsError:
                destination = unique_destination(destination.parent, source.name, _COMPANIONS)
                self._deps.journal.update(key, destination=str(destination))
        raise TransientError(f"no free name for {source.name} in {destination.parent}")

    def _still_the_same(self, source: Path, event: FileDetected, kind: str) -> bool:
        """Whether the entry at ``source`` is still the one this key is about.

        A non-regular entry has no content to compare: it must still be the same kind of
        entry, with the event's size and mtime (a regular file put in its place is not moved
        as if it were the link or pipe that was judged).
        """
        try:
            now = read_job_file(source, self._deps.policy.max_script_bytes)
        except FileNotFoundError:
            return False
        if kind not in ("file", "hardlink"):
            return now.kind == kind and (now.size, now.mtime_ns) == (event.size, event.mtime_ns)
        return _same_content(now, event)


def _source(event: FileDetected, record: dict[str, Any]) -> Path:
    """Where the file of this key is now: parked in failed/ after a dead letter, else as dropped."""
    parked = record.get("parked")
    if parked and os.path.lexists(parked):
        return Path(parked)
    return Path(event.path)


def _parked_text(name: str, reason: str) -> str:
    """The ``.error`` of a parked file: not the user's fault, an operator was told."""
    return (
        f"slurm-k8s could not submit {name}: the system kept failing while handling it, so "
        "it was set aside here.\n"
        "This is not a problem found in your file. The operators have been told; once the "
        "cause is fixed they resubmit it (slurmk8s replay), and it then moves to submitted/ "
        "with its receipt, or gets an error file if a problem is found in it.\n"
        "You do not need to copy it again.\n"
        f"cause: {reason}\n"
    )


def _changed(job: JobFile, event: FileDetected) -> bool:
    """Whether the entry read now is not the one the event was about (the event is stale).

    A regular file is compared by content and owner. A link, pipe or folder has no content
    read: it must have the event's size and mtime (a file replaced by a link since the event is
    a new entry, which the watcher reports on its own).
    """
    if job.kind in ("file", "hardlink"):
        return not _same_content(job, event) or job.uid != event.owner_uid
    return (job.size, job.mtime_ns) != (event.size, event.mtime_ns)


def _same_content(job: JobFile, event: FileDetected) -> bool:
    """Whether a file read now is the content the event was about.

    A file within the limit is compared by digest. A file over it was never read, here or in
    the watcher (whose ``sha256`` is then a digest of the file's identity, not of its bytes):
    it is the same file while its size and mtime are those of the event.
    """
    if job.oversize:
        return job.size == event.size and job.mtime_ns == event.mtime_ns
    return job.sha256 == event.sha256


def _size(size: int) -> str:
    """``1048576 bytes (1.0 MiB)``; small sizes in bytes only."""
    if size < 1024:
        return f"{size} bytes"
    value = size / 1024
    units = ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{size} bytes ({value:.1f} {units[0]})"


def _sbatch_problem(reason: str) -> Problem:
    """One of sbatch's error lines; job_submit.lua's "line N: …" keeps its line number."""
    match = re.match(r"^line (\d+): (.*)$", reason)
    if match:
        return Problem(line=int(match[1]), message=match[2])
    return Problem(line=0, message=f"sbatch: {reason}")


def _k8s_script(parsed: ParsedScript) -> str:
    """The file's ``#K8S_SCRIPT`` (checked by the policy), "" when it names none."""
    found = parsed.k8s_value("SCRIPT")
    return found.value if found is not None else ""


def _receipt_fields(
    body: JobSubmitted, event: FileDetected, destination: Path, k8s_script: str
) -> dict[str, Any]:
    """What the validator knows of an accepted file; the receipt adds the job's progress."""
    return {
        "job_id": body.job_id,
        "user": body.user,
        "uid": body.uid,
        "submitted_at": body.submitted_at.isoformat(),
        "submission_key": body.submission_key,
        "sha256": event.sha256,
        "size": event.size,
        "source_path": event.path,
        "submitted_path": str(destination),
        "output_path": body.output_path,
        "k8s_script": k8s_script,
    }


def _error_text(event: FileDetected, problems: Sequence[Problem]) -> str:
    name = Path(event.path).name
    header = f"slurm-k8s did not submit {name}: {len(problems)} problem(s) to fix"
    return "\n".join([header, *(format_problem(p) for p in problems)]) + "\n"


def _job_name(parsed: ParsedScript, path: str) -> str:
    """The job's name: the script's ``--job-name``, else the file's name (what we pass)."""
    option = parsed.last("job-name")
    return option.value if option is not None and option.value else Path(path).name


def _default_job_name(parsed: ParsedScript, path: str) -> str:
    """The file's name, like ``sbatch FILE`` would use, unless the script names the job."""
    return "" if parsed.last("job-name") is not None else Path(path).name


def squeue_output(
    parsed: ParsedScript, *, job_id: int, user: str, cwd: str, name: str
) -> str | None:
    """What ``Slurm.stdout_path`` would answer, when the script alone decides it; else None.

    Saves a Slurm round trip per file (a squeue and slurmctld's read lock). squeue 22.05 prints
    ``--output`` as given when absolute, else joined to the job's working directory, which is
    sbatch's ``getcwd()`` (links resolved) when the script sets no ``--chdir``; without
    ``--output``, ``slurm-%j.out`` there (``slurm-%A_%a.out`` for an array). Our sbatch gets no
    option from the environment, and the directives are read as sbatch reads them
    (``parse_script``), so for a script without ``--chdir``, ``--array`` or a backslash in its
    ``--output`` (Slurm's "do not expand") the two are the same string; the rest is asked.
    """
    if parsed.last("chdir") is not None or parsed.last("array") is not None:
        return None
    output = parsed.last("output")
    if output is not None and not output.value:
        return None
    pattern = output.value if output is not None and output.value else "slurm-%j.out"
    if "\\" in pattern:
        return None
    if not pattern.startswith("/"):
        if os.path.realpath(cwd) != cwd:
            return None
        pattern = f"{cwd}/{pattern}"
    return expand_output_pattern(pattern, job_id=job_id, user=user, name=name)


def expand_output(parsed: ParsedScript, *, job_id: int, user: str, home: str, path: str) -> str:
    """The job's output path from its script, when slurmctld cannot say any more.

    Patterns are expanded by ``shared.slurmctl.expand_output_pattern`` (the one expander).
    """
    chdir = parsed.last("chdir")
    base = canonical(chdir.value.replace("%u", user), home) if chdir and chdir.value else home
    output = parsed.last("output")
    pattern = output.value if output and output.value else "slurm-%j.out"
    name_option = parsed.last("job-name")
    name = name_option.value if name_option and name_option.value else Path(path).name
    text = expand_output_pattern(pattern, job_id=job_id, user=user, name=name)
    return posixpath.normpath(posixpath.join(base, text))
