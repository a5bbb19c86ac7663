"""What a job run's Pod says about itself: state, exit, image digest, GPUs, and its events.

The collector and ``slurmk8s explain`` read Pods the same way, so the reading lives here: one
pure function from the client's ``V1Pod`` to a small frozen ``PodFacts``, and two calls
through ``shared.kube.api_call`` (so API failures arrive as the project's errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client

from shared.kube import KubeNotFound, api_call

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


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def facts_of(pod: Any) -> PodFacts:
    """Reduce a ``V1Pod`` to ``PodFacts`` (the job's container is the first one)."""
    meta, spec, status = pod.metadata, pod.spec, pod.status
    container = spec.containers[0] if spec and spec.containers else None
    requests = (container.resources.requests or {}) if container and container.resources else {}
    statuses = (status.container_statuses or []) if status else []
    cstatus = statuses[0] if statuses else None
    exit_code: int | None = None
    reason = (status.reason or "") if status else ""
    message = (status.message or "") if status else ""
    started = finished = ""
    if cstatus is not None and cstatus.state is not None:
        terminated = cstatus.state.terminated
        waiting = cstatus.state.waiting
        running = cstatus.state.running
        if terminated is not None:
            exit_code = terminated.exit_code
            reason = terminated.reason or reason
            message = terminated.message or message
            started, finished = _iso(terminated.started_at), _iso(terminated.finished_at)
        elif waiting is not None:
            reason = waiting.reason or reason
            message = waiting.message or message
        elif running is not None:
            started = _iso(running.started_at)
    if exit_code is None and not started:
        reason, message = _setup_problem(status, reason, message)
    try:
        gpus = int(str(requests.get(GPU_RESOURCE, "0")))
    except ValueError:
        gpus = 0
    annotations = (meta.annotations or {}) if meta is not None else {}
    return PodFacts(
        k8s_script=annotations.get(SCRIPT_ANNOTATION, ""),
        results_dir=annotations.get(RESULTS_ANNOTATION, ""),
        namespace=meta.namespace or "",
        name=meta.name or "",
        phase=(status.phase or "") if status else "",
        node=(spec.node_name or "") if spec else "",
        image=container.image if container else "",
        image_id=(cstatus.image_id or "") if cstatus else "",
        exit_code=exit_code,
        reason=reason,
        message=message.strip(),
        started_at=started,
        finished_at=finished,
        gpus=gpus,
        terminating=meta.deletion_timestamp is not None,
    )


SETUP_FAILED = "SetupFailed"
"""The init container (slurm-k8s's own setup from the tools image) ended with an error."""


def _setup_problem(status: Any, reason: str, message: str) -> tuple[str, str]:
    """While the job's container has not started: a failing init container's reason.

    Its image pull failures keep their kubelet reason (ErrImagePull, …) with a message naming
    the setup; a setup that exited non-zero is ``SETUP_FAILED``. Otherwise nothing changes.
    """
    for init in (status.init_container_statuses or []) if status else []:
        state = init.state
        if state is None:
            continue
        if state.waiting is not None and state.waiting.reason not in (None, "PodInitializing"):
            detail = (state.waiting.message or "").strip()
            return state.waiting.reason, f"slurm-k8s setup container ({init.image}): {detail}"
        if state.terminated is not None and state.terminated.exit_code != 0:
            detail = (state.terminated.message or state.terminated.reason or "").strip()
            return SETUP_FAILED, (
                f"slurm-k8s setup container ({init.image}) exited "
                f"{state.terminated.exit_code}: {detail}"
            )
    return reason, message


def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> PodFacts | None:
    """The Pod's facts, or None if it does not exist.

    Raises:
        TransientError: the API is unreachable or overloaded.
        PermanentError: the API refused (e.g. RBAC).
    """
    try:
        with api_call():
            return facts_of(core.read_namespaced_pod(name, namespace))
    except KubeNotFound:
        return None


@dataclass(frozen=True)
class PodEvent:
    """One Kubernetes event about a Pod."""

    at: str
    type: str
    reason: str
    message: str
    count: int = 1


def pod_events(core: client.CoreV1Api, namespace: str, name: str) -> list[PodEvent]:
    """The Pod's events, oldest first (events outlive the Pod for about an hour)."""
    with api_call():
        listing = core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}"
        )
    events = [
        PodEvent(
            at=_iso(e.last_timestamp or e.event_time or e.first_timestamp),
            type=e.type or "",
            reason=e.reason or "",
            message=(e.message or "").strip(),
            count=e.count or 1,
        )
        for e in listing.items
    ]
    return sorted(events, key=lambda e: e.at)
