"""The Slurm boundary: sbatch as the file's owner, and finding a submission again by its key.

sbatch runs through ``runuser`` as the owner (never as root on user content), reads the exact
validated bytes from stdin (no re-read of the file), and gets a clean environment: sbatch lets
``SBATCH_*`` variables override script options and exports its environment into the job, so the
service's own variables must not leak in. The submission key travels in ``--comment``, which
accounting keeps (``AccountingStoreFlags=job_comment``), so a redelivered message finds the job
with ``squeue``/``sacct`` even when the local journal was lost.

sbatch's failures are translated here: "the controller is not answering" becomes
``TransientError`` (the message is retried with backoff and the file waits), anything else
``SubmitRefused`` carrying sbatch's own words for the ``.error`` file.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from shared.errors import PermanentError, TransientError

COMMENT_PREFIX = "slurmk8s-key="
#: job_submit.lua's refusal of a key it accepted moments ago (``M.DUPLICATE_TEXT``).
DUPLICATE_TEXT = "slurm-k8s: this submission key was submitted moments ago"
_SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# sbatch/squeue wording when slurmctld (or slurmdbd for sacct) is down, busy or unreachable.
_TRANSIENT = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"Connection timed out|temporarily unavailable|Slurmctld is busy|Zero Bytes were "
    r"transmitted|Communication connection failure|Unable to establish|Transport endpoint|"
    r"No route to host|slurmdbd|Connection reset|try again|Resource temporarily",
    re.IGNORECASE,
)


class SubmitRefused(PermanentError):
    """sbatch refused the job; ``reasons`` are its error lines, without the prefix."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = tuple(reasons)


class Slurm(Protocol):
    """What the validator needs from Slurm (a fake in unit tests)."""

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        """Submit as ``user``; return the job id."""
        ...

    def find_job(self, *, user: str, key: str, attempted: bool) -> int | None:
        """The id of ``user``'s job carrying this submission key, if any.

        ``attempted`` says whether an earlier sbatch with this key may have run; only then
        must accounting answer (a key that was never submitted cannot be there).
        """
        ...

    def stdout_path(self, job_id: int) -> str | None:
        """Where the job's output goes, patterns expanded, if Slurm still knows the job."""
        ...


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


class SlurmCli:
    """Slurm through its command-line clients.

    Args:
        timeout_s: how long sbatch may take.
        query_timeout_s: how long squeue, sacct and scontrol may take.
        lookback_days: how far back accounting is searched for a key.
        slurm_conf: SLURM_CONF to pass on (the only Slurm variable the clients need).
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        query_timeout_s: float,
        lookback_days: int,
        slurm_conf: str | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._query_timeout_s = query_timeout_s
        self._lookback_days = lookback_days
        self._slurm_conf = slurm_conf if slurm_conf is not None else os.environ.get("SLURM_CONF")

    def _env(self, user: str | None = None, home: Path | None = None) -> dict[str, str]:
        env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8"}
        if self._slurm_conf:
            env["SLURM_CONF"] = self._slurm_conf
        if user is not None:
            env |= {"USER": user, "LOGNAME": user}
        if home is not None:
            env["HOME"] = str(home)
        return env

    def _run(
        self,
        argv: list[str],
        *,
        timeout: float,
        env: dict[str, str],
        stdin: bytes = b"",
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                timeout=timeout,
                check=False,
                env=env,
                cwd=cwd,
            )
        except subprocess.TimeoutExpired as exc:
            # The job may or may not exist now: the retry looks its key up before submitting.
            raise TransientError(f"{argv[0]} did not answer within {timeout:.0f} s") from exc
        except OSError as exc:
            raise TransientError(f"cannot run {argv[0]}: {exc.strerror}") from exc

    def submit(self, script: bytes, *, user: str, key: str, cwd: Path, job_name: str) -> int:
        """Run sbatch as ``user`` in ``cwd`` with the script on stdin.

        Raises:
            TransientError: the controller could not be reached or sbatch timed out.
            SubmitRefused: sbatch (or job_submit.lua) refused the job.
        """
        argv = [
            "runuser", "-u", user, "--",
            "sbatch", "--parsable", f"--comment={COMMENT_PREFIX}{key}",
        ]  # fmt: skip
        if job_name:
            argv.append(f"--job-name={job_name}")
        done = self._run(
            argv, timeout=self._timeout_s, stdin=script, cwd=cwd, env=self._env(user, cwd)
        )
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
        found = _match_key(queue, key)
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
        return _match_key(history, key)

    def stdout_path(self, job_id: int) -> str | None:
        """StdOut from ``scontrol show job`` (22.05 prints it with patterns expanded)."""
        try:
            text = self._query(["scontrol", "show", "job", str(job_id)])
        except TransientError:
            return None
        match = re.search(r"\bStdOut=(\S+)", text)
        return match[1] if match else None

    def _query(self, argv: list[str]) -> str:
        done = self._run(argv, timeout=self._query_timeout_s, env=self._env())
        if done.returncode != 0:
            raise TransientError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")


def _match_key(listing: str, key: str) -> int | None:
    """The job id in ``id|comment`` lines whose comment carries the key."""
    wanted = f"{COMMENT_PREFIX}{key}"
    for line in listing.splitlines():
        job, _, comment = line.strip().partition("|")
        # The collector appends "; reason=…" to a failed job's comment; the key stays first.
        if comment.strip().split(";")[0].strip() == wanted:
            # Array jobs are listed as 123_4 or 123_[1-9]; the submission is job 123.
            base = job.split("_")[0].split("+")[0]
            if base.isdigit():
                return int(base)
    return None
