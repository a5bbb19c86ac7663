"""``slurmk8s explain JOBID``: Slurm's view, the Pod's view and a one-line diagnosis, on one page.

Gathering talks to Slurm (``shared.slurmctl``) and, when a kubeconfig is available, to
Kubernetes (``shared.kube``); the diagnosis and the page are pure functions of what was
gathered, so they are unit-tested without a cluster. Anything that cannot be read becomes a
note on the page instead of an error: the command is for finding out what is wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ServiceError
from shared.jobpods import JOB_NAMESPACE, LABEL_JOB_ID, LABEL_RESTART, run_name
from shared.podfacts import PodEvent, PodFacts
from shared.slurmctl import AccountingRecord, JobRecord, SlurmCtl, gpu_count

_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_NOT_ENDED = frozenset({"PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "REQUEUED"})
_SHOWN_FIELDS = (
    ("Partition", "Partition"),
    ("Node", "NodeList"),
    ("Submitted", "SubmitTime"),
    ("Started", "StartTime"),
    ("Ended", "EndTime"),
    ("Time limit", "TimeLimit"),
    ("Resources", "TRES"),
    ("Dependency", "Dependency"),
    ("Output", "StdOut"),
    ("Comment", "Comment"),
    ("AdminComment", "AdminComment"),
)


@dataclass
class Explanation:
    """Everything gathered about one job; absent parts are None with a note saying why."""

    job_id: int
    job: JobRecord | None = None
    acct: AccountingRecord | None = None
    priority: str = ""
    gpu_holders: list[tuple[int, int]] = field(default_factory=list)
    pod: PodFacts | None = None
    pod_name: str = ""
    events: list[PodEvent] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    summary_path: str = ""
    notes: list[str] = field(default_factory=list)
    pod_checked: bool = False

    @property
    def state(self) -> str:
        """The state slurmctld reports, else accounting's, else UNKNOWN."""
        if self.job is not None:
            return self.job.state
        if self.acct is not None:
            return self.acct.base_state
        return "UNKNOWN"


PodReader = Callable[[int, int | None], tuple[PodFacts | None, str, list[PodEvent]]]
"""(job id, restart count if known) → (the run's Pod, its name, its events)."""


def gather(job_id: int, ctl: SlurmCtl, pods: PodReader | None, pod_note: str = "") -> Explanation:
    """Ask Slurm and Kubernetes; every failure becomes a note."""
    ex = Explanation(job_id)
    try:
        ex.job = ctl.show_job(job_id)
    except ServiceError as exc:
        ex.notes.append(f"scontrol: {exc}")
    try:
        ex.acct = ctl.accounting(job_id)
    except ServiceError as exc:
        ex.notes.append(f"sacct: {exc}")
    if ex.state == "PENDING":
        try:
            ex.priority = ctl.priority_factors(job_id)
            if ex.job is not None and ex.job.reason == "Resources":
                ex.gpu_holders = ctl.running_gpu_jobs()
        except ServiceError as exc:
            ex.notes.append(f"sprio/squeue: {exc}")
    if pods is None:
        ex.notes.append(pod_note or "Pod details unavailable")
    else:
        restarts = ex.job.restarts if ex.job is not None else None
        try:
            ex.pod, ex.pod_name, ex.events = pods(job_id, restarts)
            ex.pod_checked = True
        except ServiceError as exc:
            ex.notes.append(f"Kubernetes: {exc}")
    stdout = ex.job.stdout if ex.job is not None else ""
    if stdout:
        ex.summary_path = stdout + ".summary.json"
        try:
            ex.summary = json.loads(Path(ex.summary_path).read_text())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            ex.notes.append(f"summary unreadable: {exc}")
    return ex


def diagnose(ex: Explanation) -> str:
    """One line saying what is going on, most specific evidence first."""
    if ex.job is None and ex.acct is None:
        return f"unknown job: Slurm has no record of job {ex.job_id}"
    state = ex.state
    if state == "PENDING":
        return _pending(ex)
    pod, summary = ex.pod, ex.summary or {}
    reason = pod.reason if pod is not None and pod.reason else str(summary.get("reason", ""))
    message = pod.message if pod is not None and pod.message else str(summary.get("message", ""))
    if reason in _PULL_FAILURES:
        return f"image pull failed: {message or reason}"
    if reason == "CreateContainerConfigError":
        return f"the container could not be configured: {message or reason}"
    if reason == "OOMKilled" or state == "OUT_OF_MEMORY":
        return "ran out of memory (OOMKilled): ask for more with --mem"
    if state in ("RUNNING", "CONFIGURING", "COMPLETING"):
        return _running(ex)
    if state == "COMPLETED":
        return "completed"
    if state == "TIMEOUT":
        limit = ex.job.get("TimeLimit") if ex.job is not None else ""
        return f"hit its time limit{f' ({limit})' if limit else ''}"
    if state == "CANCELLED":
        return "cancelled"
    code = summary.get("exit_code")
    if code is None and pod is not None:
        code = pod.exit_code
    if code is None:
        code = _exit_status(ex)
    detail = f" ({reason})" if reason else ""
    return f"{state.lower()} with exit code {code}{detail}"


def _exit_status(ex: Explanation) -> str:
    raw = ex.acct.exit_code if ex.acct is not None else ""
    if not raw and ex.job is not None:
        raw = ex.job.get("ExitCode")
    return raw.split(":", 1)[0] if raw else "unknown"


def _pending(ex: Explanation) -> str:
    assert ex.job is not None or ex.acct is not None
    reason = ex.job.reason if ex.job is not None else ""
    if reason == "Resources":
        wanted = gpu_count(ex.job.get("TRES")) if ex.job is not None else 0
        if wanted and ex.gpu_holders:
            in_use = sum(g for _, g in ex.gpu_holders)
            jobs = ", ".join(str(j) for j, _ in ex.gpu_holders)
            return f"waiting for GPUs: needs {wanted}, {in_use} in use by jobs {jobs}"
        return "waiting for resources: the CPUs, memory or GPUs it asked for are in use"
    if reason == "Priority":
        return "waiting for higher-priority jobs to start first (priority factors below)"
    if reason == "Dependency":
        dep = ex.job.get("Dependency") if ex.job is not None else ""
        return f"waiting for its dependency{f' ({dep})' if dep else ''}"
    if reason == "BeginTime":
        return f"waiting for its begin time ({ex.job.get('EligibleTime') if ex.job else ''})"
    if reason.startswith("JobHeld"):
        return f"held ({reason}): release it with scontrol release {ex.job_id}"
    return f"pending: {reason or 'no reason given yet'}"


def _running(ex: Explanation) -> str:
    pod = ex.pod
    if pod is None:
        return "running; no Pod found (not a container job, or the launcher has not created it)"
    if pod.phase == "Pending":
        why = f": {pod.reason}" if pod.reason else ""
        return f"running in Slurm; its Pod {pod.name} is starting on {pod.node or '?'}{why}"
    if pod.phase == "Running":
        return f"running in Pod {pod.namespace}/{pod.name} on {pod.node}"
    return f"Pod {pod.name} is {pod.phase}; the job step is finishing"


def _slurm_lines(ex: Explanation) -> list[str]:
    job, lines = ex.job, ["Slurm"]
    if job is not None:
        lines.append(
            f"  State: {job.state} (reason: {job.reason or 'None'})"
            f"  Exit code: {job.get('ExitCode') or '-'}  Restarts: {job.restarts}"
        )
        for label, key in _SHOWN_FIELDS:
            if job.get(key):
                # Before the end, EndTime is when the time limit would end the job.
                shown = "Ends by" if key == "EndTime" and job.state in _NOT_ENDED else label
                lines.append(f"  {shown}: {job.get(key)}")
    if ex.acct is not None:
        lines.append(
            f"  Accounting: {ex.acct.state}, exit {ex.acct.exit_code}, "
            f"{ex.acct.start} → {ex.acct.end}, {ex.acct.node_list or '-'}"
        )
    if job is None and ex.acct is None:
        lines.append("  (no record)")
    if ex.priority:
        lines += ["", "Priority factors (sprio -l)"]
        lines += [f"  {line}" for line in ex.priority.splitlines()]
    if ex.gpu_holders:
        holders = ", ".join(f"{j} ({g})" for j, g in ex.gpu_holders)
        lines.append(f"  GPUs held by running jobs: {holders}")
    return lines


def _container_state(pod: PodFacts) -> str:
    if pod.exit_code is not None:
        state = f"terminated, exit {pod.exit_code}"
    elif pod.reason:
        state = "waiting"
    elif pod.started_at:
        state = f"running since {pod.started_at}"
    else:
        state = "-"
    if pod.reason:
        state += f" ({pod.reason}{': ' + pod.message if pod.message else ''})"
    return state


def _pod_lines(ex: Explanation) -> list[str]:
    lines = [f"Pod {JOB_NAMESPACE}/{ex.pod_name}" if ex.pod_name else "Pod"]
    pod = ex.pod
    if pod is not None:
        lines += [
            f"  Phase: {pod.phase}{'  (being deleted)' if pod.terminating else ''}",
            f"  Container: {_container_state(pod)}",
            f"  Node: {pod.node or '-'}  GPUs: {pod.gpus}",
            f"  Image: {pod.image}",
            f"  Digest: {pod.image_digest or '-'}",
        ]
    elif not ex.pod_checked:
        lines.append("  (not checked: see the notes)")
    else:
        lines.append("  (gone: deleted after the job ended, or never created)")
    if ex.events:
        lines.append("  Events:")
        lines += [
            f"    {e.at}  {e.type:<7} {e.reason:<18} {e.message}"
            + (f" (x{e.count})" if e.count > 1 else "")
            for e in ex.events[-15:]
        ]
    return lines


def render(ex: Explanation) -> str:
    """The page: heading, diagnosis, Slurm, priority, Pod, events, summary, notes."""
    job = ex.job
    name = job.get("JobName") if job else ""
    user = job.user if job else (ex.acct.user if ex.acct else "")
    lines = [
        f"Job {ex.job_id}{f' ({name})' if name else ''}{f', user {user}' if user else ''}: "
        f"{ex.state}",
        f"Diagnosis: {diagnose(ex)}",
        "",
        *_slurm_lines(ex),
        "",
        *_pod_lines(ex),
    ]
    if ex.summary is not None:
        lines += ["", f"Summary ({ex.summary_path})"]
        lines += [f"  {k}: {v}" for k, v in sorted(ex.summary.items()) if v not in ("", None)]
    if ex.notes:
        lines += ["", "Notes"] + [f"  {note}" for note in ex.notes]
    return "\n".join(lines) + "\n"


def kube_pod_reader() -> tuple[PodReader | None, str]:
    """A reader over the user's kubeconfig, or None and why not."""
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not Path(path).is_file():
        return None, "Pod details unavailable: no KUBECONFIG (ask an operator, or see sacct)"
    from kubernetes import client  # deferred: only explain needs the Kubernetes client

    from shared.kube import REQUEST_TIMEOUT, api_call, api_client, pod_events, read_pod

    try:
        core = client.CoreV1Api(api_client(Path(path)))
    except Exception as exc:  # a broken kubeconfig must not break the page
        return None, f"Pod details unavailable: kubeconfig {path}: {exc}"

    def read(job_id: int, restarts: int | None) -> tuple[PodFacts | None, str, list[PodEvent]]:
        if restarts is None:
            with api_call():
                found = core.list_namespaced_pod(
                    JOB_NAMESPACE,
                    label_selector=f"{LABEL_JOB_ID}={job_id}",
                    _request_timeout=REQUEST_TIMEOUT,
                ).items
            runs = [
                int(((p.metadata.labels if p.metadata else None) or {}).get(LABEL_RESTART, 0))
                for p in found
            ]
            restarts = max(runs, default=0)
        name = run_name(job_id, restarts)
        return read_pod(core, JOB_NAMESPACE, name), name, pod_events(core, JOB_NAMESPACE, name)

    return read, ""


def explain_job(job_id: int) -> str:
    """Gather and render the page for one job."""
    reader, note = kube_pod_reader()
    return render(gather(job_id, SlurmCtl(), reader, note))
