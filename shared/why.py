"""``slurmk8s why``: a job's facts and diagnosis as JSON, and why a dropped file was refused.

The job page itself is ``shared.explaining``'s; ``why_document`` flattens what it gathered for
scripts. ``refusals`` finds the ``.error`` answers of a file refused at the NAS door.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from shared.explaining import diagnose, gather, kube_pod_reader
from shared.slurmctl import SlurmCtl


def why_document(job_id: int) -> dict[str, Any]:
    """Gather as the page does; return the diagnosis with everything it was made from."""
    reader, note = kube_pod_reader()
    ex = gather(job_id, SlurmCtl(), reader, note)
    return {
        "job_id": job_id,
        "state": ex.state,
        "diagnosis": diagnose(ex),
        "slurm": dict(ex.job.fields) if ex.job is not None else None,
        "accounting": dataclasses.asdict(ex.acct) if ex.acct is not None else None,
        "priority": ex.priority,
        "gpu_holders": [{"job_id": j, "gpus": g} for j, g in ex.gpu_holders],
        "pod": dataclasses.asdict(ex.pod) if ex.pod is not None else None,
        "pod_name": ex.pod_name,
        "events": [dataclasses.asdict(e) for e in ex.events],
        "summary": ex.summary,
        "notes": ex.notes,
    }


def refusals(failed_dir: Path, name: str) -> list[tuple[Path, str]]:
    """The ``.error`` files of a refused file dropped as ``name``, newest first.

    A refused file keeps its name in ``failed/``, or gets ``<stem>.<n>.<suffix>`` when the name
    was taken (``services.validator.filing.unique_destination``). Only a plain name is looked
    up: it is the caller's own input, and a path would look outside ``failed/``.
    """
    if not name or "/" in name or name in (".", ".."):
        return []
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    pattern = re.compile(rf"{re.escape(stem)}(\.\d+)?{re.escape(dot + suffix)}\.error")
    found: list[tuple[float, Path]] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(failed_dir):
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                found.append((entry.stat(follow_symlinks=False).st_mtime, Path(entry.path)))
    answers = []
    for _, path in sorted(found, reverse=True):
        with contextlib.suppress(OSError):
            answers.append((path, path.read_text(encoding="utf-8", errors="replace")))
    return answers
