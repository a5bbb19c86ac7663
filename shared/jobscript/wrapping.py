"""The batch script a slurm-k8s job really runs, and how the original script travels inside it.

``slurm/job_submit.lua`` replaces the script of every accepted ``#K8S_IMAGE`` job with this
wrapper: the batch step runs ``services.runner`` (which follows the job's Pod), and the user's
original script rides along base64-encoded in comment lines, where the runner and the launcher
read it back with ``extract_original_script``. The Lua and ``wrap_script`` must produce the same
text byte for byte; ``tests/unit/slurm/test_job_submit.py`` proves it.
"""

from __future__ import annotations

import base64
import binascii

WRAPPER_HEAD = (
    "#!/bin/sh\n"
    "# slurm-k8s: this job runs in a Kubernetes Pod; this batch step only follows it.\n"
    "exec /opt/slurm-k8s/venv/bin/python -m services.runner\n"
)
ORIGINAL_MARKER = "# slurm-k8s-original-script-base64:"
ACCEPTED_MARK = "slurmk8s-accepted"
"""job_submit.lua's mark in the AdminComment of every job it accepted and wrapped.

Users cannot write a job's AdminComment, so this (not the wrapper's text, which anyone can
submit) is what makes a job a slurm-k8s job; notes written later keep it as their prefix.
Mirrored as ``M.ACCEPTED_MARK`` in job_submit.lua.
"""
LINE_WIDTH = 76
#: Texts only a wrapper carries. A submitted script containing one is refused, plain jobs
#: included: a user must never hand in a ready-made wrapper whose "original" the launcher
#: would run unchecked. Mirrored as ``M.WRAPPER_SIGNS`` in job_submit.lua.
WRAPPER_SIGNS = ("slurm-k8s-original-script-base64", "-m services.runner")


def is_accepted(admin_comment: str | None) -> bool:
    """Whether a job's AdminComment carries job_submit.lua's ``ACCEPTED_MARK`` prefix."""
    return admin_comment is not None and admin_comment.startswith(ACCEPTED_MARK)


def wrapper_sign(data: bytes) -> tuple[int, str] | None:
    """The earliest wrapper sign in a script, as (line, sign), or None.

    Linear: one ``find`` per sign, then the newlines before the earliest hit are counted.
    """
    hits = [(at, sign) for sign in WRAPPER_SIGNS if (at := data.find(sign.encode())) >= 0]
    if not hits:
        return None
    at, sign = min(hits)
    return data.count(b"\n", 0, at) + 1, sign


def wrap_script(original: bytes) -> str:
    """The wrapper for an original script (same text as job_submit.lua produces)."""
    encoded = base64.b64encode(original).decode("ascii")
    lines = [f"# {encoded[i : i + LINE_WIDTH]}\n" for i in range(0, len(encoded), LINE_WIDTH)]
    return WRAPPER_HEAD + ORIGINAL_MARKER + "\n" + "".join(lines)


def extract_original_script(wrapper: str) -> bytes | None:
    """The original script carried by a wrapper, or None if ``wrapper`` is not one."""
    if not wrapper.startswith(WRAPPER_HEAD):
        return None
    lines = wrapper[len(WRAPPER_HEAD) :].split("\n")
    if not lines or lines[0] != ORIGINAL_MARKER:
        return None
    chunks = []
    for line in lines[1:]:
        if not line:
            continue
        if not line.startswith("# "):
            return None
        chunks.append(line[2:])
    try:
        return base64.b64decode("".join(chunks), validate=True)
    except (binascii.Error, ValueError):
        return None
