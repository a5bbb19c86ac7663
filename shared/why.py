"""``slurmk8s why JOBID --json``: the ``explain`` page's facts and diagnosis as one JSON object.

The page itself is ``shared.explaining``'s; this only flattens what it gathered for scripts.
"""

from __future__ import annotations

import dataclasses
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
