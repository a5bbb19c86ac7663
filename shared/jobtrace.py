"""The job's trace context on its way through Slurm: a ``traceparent`` token in the comment.

The validator submits with
``--comment='slurmk8s-key=<hex>; traceparent=00-<trace>-<span>-<flags>'``; slurmd hands the
comment to the prolog and epilog (``SLURM_JOB_COMMENT``), which forward the token as the
``traceparent`` header of ``job.started``/``job.ended``, so the launcher's and the collector's
spans join the trace the watcher started. The comment is writable by the job's owner, so the
token only ever links spans: it is read with one strict pattern (W3C version 00, lower-case
hex, no all-zero ids) and decides nothing. Standard library only: the prolog imports this and
must stay quick.
"""

from __future__ import annotations

import re

TRACEPARENT_HEADER = "traceparent"
_TOKEN = "traceparent="
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
# A comment is at most a key and a few notes; anything longer is not ours to parse.
_MAX_COMMENT = 1024


def valid_traceparent(value: str) -> bool:
    """Whether ``value`` is a W3C version-00 ``traceparent`` with real (non-zero) ids."""
    return _TRACEPARENT.fullmatch(value) is not None


def with_traceparent(comment: str, traceparent: str | None) -> str:
    """``comment`` followed by ``; traceparent=…`` when there is a valid context to carry."""
    if traceparent is None or not valid_traceparent(traceparent):
        return comment
    return f"{comment}; {_TOKEN}{traceparent}"


def traceparent_in(comment: str | None) -> str | None:
    """The ``traceparent`` token of a job comment, or None when absent or malformed."""
    if not comment or len(comment) > _MAX_COMMENT:
        return None
    for part in comment.split(";"):
        token = part.strip()
        if token.startswith(_TOKEN) and valid_traceparent(token[len(_TOKEN) :]):
            return token[len(_TOKEN) :]
    return None
