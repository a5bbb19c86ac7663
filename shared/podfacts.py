"""What a job run's Pod says about itself: state, exit, image digest, GPUs, and its events.

The launcher, the collector, ``slurmk8s explain`` and the runner read Pods the same way, so the
reading lives here: one pure function from a Pod to a small frozen ``PodFacts``. It reads the
API's JSON; the client's ``V1Pod`` is turned into that JSON first. Nothing here imports the
kubernetes package, so the runner (one per running job, with the standard library's HTTP) stays
small; the client calls are in ``shared.kube``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
SCRIPT_ANNOTATION = "slurm-k8s.io/k8s-script"
"""Set by the launcher on each Pod (users cannot change Pods: their Role has no patch)."""
RESULTS_ANNOTATION = "slurm-k8s.io/results-dir"


@dataclass(frozen=True)
class PodFacts:
    """A Pod's state as far as a job's outcome is concerned."""

    namespace: str
    name: str
    phase: str
    node: str = ""
    image: str = ""
    image_id: str = ""
    exit_code: int | None = None
    reason: str = ""
    """Why the container ended or is waiting (OOMKilled, Error, ErrImagePull, …) or the
    Pod-level reason (Evicted, UnexpectedAdmissionError, …)."""
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    gpus: int = 0
    terminating: bool = False
    k8s_script: str = ""
    """``#K8S_SCRIPT`` of the run, from the launcher's annotation ("" when none)."""
    results_dir: str = ""
    """``<NAS>/results/<jobid>``, from the launcher's annotation."""

    @property
    def image_digest(self) -> str:
        """``sha256:…`` from the runtime's image id ("" before the image is pulled)."""
        _, at, digest = self.image_id.rpartition("@")
        if at:
            return digest
        return self.image_id if self.image_id.startswith("sha256:") else ""

    @property
    def terminated(self) -> bool:
        """The container has ended (its exit code is known)."""
        return self.exit_code is not None


def iso_time(value: datetime | str | None) -> str:
    """A Kubernetes time as ISO 8601 with ``+00:00``; "" for none.

    The JSON's ``…Z`` and the client's ``datetime`` read alike.
    """
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value


def _obj(parent: Mapping[str, Any] | None, key: str) -> Mapping[str, Any]:
    value = parent.get(key) if parent else None
    return value if isinstance(value, Mapping) else {}


def _str(parent: Mapping[str, Any], key: str) -> str:
    value = parent.get(key)
    return value if isinstance(value, str) else ""


def _list(parent: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = parent.get(key)
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


@cache
def _serializer() -> Any:
    from kubernetes.client import ApiClient  # only callers holding the client's models get here

    return ApiClient()


def pod_json(pod: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    """The API's JSON of a Pod: as is, or from the client's ``V1Pod`` (its wire names)."""
    if isinstance(pod, Mapping):
        return pod
    doc: Mapping[str, Any] = _serializer().sanitize_for_serialization(pod)
    return doc


def facts_of(pod: Mapping[str, Any] | Any) -> PodFacts:
    """Reduce a Pod (its JSON, or a ``V1Pod``) to ``PodFacts`` (the job's container is first)."""
    doc = pod_json(pod)
    meta, spec, status = _obj(doc, "metadata"), _obj(doc, "spec"), _obj(doc, "status")
    containers = _list(spec, "containers")
    container = containers[0] if containers else {}
    requests = _obj(_obj(container, "resources"), "requests")
    statuses = _list(status, "containerStatuses")
    cstatus = statuses[0] if statuses else {}
    state = _obj(cstatus, "state")
    exit_code: int | None = None
    reason, message = _str(status, "reason"), _str(status, "message")
    started = finished = ""
    if terminated := _obj(state, "terminated"):
        code = terminated.get("exitCode")
        exit_code = code if isinstance(code, int) else None
        reason = _str(terminated, "reason") or reason
        message = _str(terminated, "message") or message
        started = iso_time(_str(terminated, "startedAt"))
        finished = iso_time(_str(terminated, "finishedAt"))
    elif waiting := _obj(state, "waiting"):
        reason = _str(waiting, "reason") or reason
        message = _str(waiting, "message") or message
    elif running := _obj(state, "running"):
        started = iso_time(_str(running, "startedAt"))
    try:
        gpus = int(str(requests.get(GPU_RESOURCE, "0")))
    except ValueError:
        gpus = 0
    annotations = _obj(meta, "annotations")
    return PodFacts(
        k8s_script=_str(annotations, SCRIPT_ANNOTATION),
        results_dir=_str(annotations, RESULTS_ANNOTATION),
        namespace=_str(meta, "namespace"),
        name=_str(meta, "name"),
        phase=_str(status, "phase"),
        node=_str(spec, "nodeName"),
        image=_str(container, "image"),
        image_id=_str(cstatus, "imageID"),
        exit_code=exit_code,
        reason=reason,
        message=message.strip(),
        started_at=started,
        finished_at=finished,
        gpus=gpus,
        terminating=meta.get("deletionTimestamp") is not None,
    )


@dataclass(frozen=True)
class PodEvent:
    """One Kubernetes event about a Pod."""

    at: str
    type: str
    reason: str
    message: str
    count: int = 1
