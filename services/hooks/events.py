"""Turning the environment slurmd gives a prolog/epilog into a ``job.started``/``job.ended``.

Only the environment is used: calling ``scontrol`` from a prolog is what Slurm's documentation
warns against (it loads slurmctld on every job start and can deadlock it).
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping
from typing import Literal

from pydantic import ValidationError

from shared.errors import PermanentError
from shared.jobtrace import TRACEPARENT_HEADER, traceparent_in
from shared.messages import Envelope, JobEnded, JobStarted

HookKind = Literal["prolog", "epilog"]


class IncompleteEnvironment(PermanentError):
    """The environment lacks what an event needs (not run by slurmd, or a root job)."""


def build_event(kind: HookKind, env: Mapping[str, str]) -> Envelope:
    """Build the event of one run of a job from the prolog's/epilog's environment.

    Raises:
        IncompleteEnvironment: a required variable is missing or invalid.
    """
    try:
        job_id = int(env["SLURM_JOB_ID"])
        uid = int(env["SLURM_JOB_UID"])
        gid = int(env["SLURM_JOB_GID"])
        node = env["SLURMD_NODENAME"]
        # Absent on a job's first run in some Slurm versions: that run is run 0.
        restart_count = int(env.get("SLURM_JOB_RESTART_COUNT") or 0)
    except (KeyError, ValueError) as exc:
        raise IncompleteEnvironment(f"{kind}: missing or invalid {exc}") from exc
    fields = {
        "job_id": job_id,
        "restart_count": restart_count,
        "node": node,
        "user": env.get("SLURM_JOB_USER") or _user_name(uid),
        "uid": uid,
        "gid": gid,
        "partition": env.get("SLURM_JOB_PARTITION", ""),
        "gpus": env.get("SLURM_JOB_GPUS", ""),
    }
    try:
        body = JobStarted(**fields) if kind == "prolog" else JobEnded(**fields)
    except ValidationError as exc:
        raise IncompleteEnvironment(f"{kind}: {exc.error_count()} invalid field(s)") from exc
    return Envelope.wrap(body)


def trace_headers(env: Mapping[str, str]) -> dict[str, str]:
    """The job's trace context for the event's headers, from its comment (``{}`` if none).

    The comment is the job owner's to write: a malformed token is dropped, a well-formed one
    only links spans (``shared.jobtrace``).
    """
    traceparent = traceparent_in(env.get("SLURM_JOB_COMMENT"))
    return {TRACEPARENT_HEADER: traceparent} if traceparent else {}


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
