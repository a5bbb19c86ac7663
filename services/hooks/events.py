"""Turning the environment slurmd gives a prolog/epilog into a ``job.started``/``job.ended``.

Only the environment is used: calling ``scontrol`` from a prolog is what Slurm's documentation
warns against (it loads slurmctld on every job start and can deadlock it).

The event is written as the JSON ``shared.messages`` decodes (``Envelope`` around a
``JobStarted``/``JobEnded``, same ``message_id``), without importing those pydantic models:
loading them was 90 ms of every hook's 140 ms, on the path from Slurm's start to the Pod and
from the job's end to its cleanup. A unit test decodes what this builds with the models, and
the consumers validate every message they receive.
"""

from __future__ import annotations

import json
import pwd
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from shared.errors import DecodeError, PermanentError
from shared.jobtrace import TRACEPARENT_HEADER, traceparent_in

HookKind = Literal["prolog", "epilog"]
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d8a52-4c1e-4f5b-9a57-1d2d0b3e9c11")
"""Mirrors ``shared.messages.envelope._NAMESPACE`` (a unit test keeps them equal)."""
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class HookEvent:
    """One run's event, encoded: its routing key (type), idempotency key, id and bytes."""

    type: str
    key: str
    message_id: str
    data: bytes


class IncompleteEnvironment(PermanentError):
    """The environment lacks what an event needs (not run by slurmd, or a root job)."""


def build_event(
    kind: HookKind, env: Mapping[str, str], occurred_at: datetime | None = None
) -> HookEvent:
    """Build the event of one run of a job from the prolog's/epilog's environment.

    ``occurred_at`` is when the hook ran (default: now; the relay passes the time the hook
    handed its environment over).

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
    # The bounds of shared.messages.jobs._JobOnNode (root's jobs, uid 0, are not ours).
    if job_id <= 0 or restart_count < 0 or uid <= 0 or gid < 0:
        raise IncompleteEnvironment(
            f"{kind}: out of range: job {job_id}, restart {restart_count}, uid {uid}, gid {gid}"
        )
    kind_type = "job.started" if kind == "prolog" else "job.ended"
    body = {
        "type": kind_type,
        "job_id": job_id,
        "restart_count": restart_count,
        "node": node,
        "user": env.get("SLURM_JOB_USER") or _user_name(uid),
        "uid": uid,
        "gid": gid,
        "partition": env.get("SLURM_JOB_PARTITION", ""),
        "gpus": env.get("SLURM_JOB_GPUS", ""),
    }
    key = f"{job_id}:r{restart_count}"
    message_id = str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{kind_type}:{key}"))
    envelope = {
        "schema_version": SCHEMA_VERSION,
        "message_id": message_id,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "body": body,
    }
    return HookEvent(kind_type, key, message_id, json.dumps(envelope).encode())


def parse_environment(data: bytes) -> dict[str, str]:
    """The environment slurm/hook wrote with ``env -0`` (NUL-separated ``KEY=value`` pairs).

    Values are the job's as slurmd set them (some are the owner's to write, like the comment):
    they are only ever read as values here. Undecodable bytes are replaced.

    Raises:
        DecodeError: the data is not such a list.
    """
    env: dict[str, str] = {}
    for pair in data.split(b"\0"):
        if not pair:
            continue
        key, sep, value = pair.decode(errors="replace").partition("=")
        if not sep or not key:
            raise DecodeError(f"not an environment: an entry without a name ({key[:40]!r})")
        env[key] = value
    return env


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
