"""The launcher's decisions, free of I/O: job.started in, the run's objects out, PodLaunched back.

Slurm, Kubernetes and the host's user database come in as ports, so unit tests use fakes. The
handler is idempotent: every create tolerates "already exists", the handoff file is rewritten
atomically, and a redelivered event (same job, same restart count) ends in the same state. An
event for a run Slurm no longer runs (finished, gone, requeued since) is acknowledged and
ignored: a Pod for it would hold the node's resources for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from services.launcher import podspec
from services.launcher.podspec import Manifest, RunSpec
from services.launcher.slurmjob import runnable
from shared.errors import PermanentError, ServiceError
from shared.jobpods import JOB_NAMESPACE
from shared.jobscript import extract_original_script, parse_script
from shared.jobscript.k8s_paths import safe_path
from shared.jobscript.policy import Policy
from shared.jobscript.resources import size_mb
from shared.jobscript.validation import check_script, format_problem
from shared.jobscript.wrapping import ACCEPTED_MARK
from shared.logs import get_logger
from shared.messages import Envelope, JobStarted, PodLaunched
from shared.slurmctl import JobStatus

_log = get_logger(__name__)

REFUSAL_PROBLEMS_SHOWN = 5
"""Policy problems quoted in a refusal; the rest are counted."""


class Refused(PermanentError):
    """This run must not get a Pod; the reason goes to the job's output and AdminComment."""


class SlurmPort(Protocol):
    """Slurm as the launcher needs it."""

    def job_status(self, job_id: int) -> JobStatus | None:
        """The job's structured record, or None when slurmctld does not know it (any more)."""

    def batch_script(self, job_id: int) -> str:
        """The batch script Slurm stored (our wrapper for accepted jobs)."""

    def note(self, job: JobStatus, text: str) -> None:
        """Record text in the job's AdminComment (keeping the acceptance mark)."""


@dataclass(frozen=True)
class Created:
    """What the cluster answered for one Pod: its uid and current phase."""

    uid: str
    phase: str


class ClusterPort(Protocol):
    """The jobs namespace as the launcher needs it."""

    def ensure(self, manifest: Manifest) -> str:
        """Create the object unless it exists; return its uid."""

    def ensure_pod(self, manifest: Manifest, *, create: bool = True) -> Created | None:
        """Create the Pod unless it exists; its uid and phase (None: gone, not created)."""

    def handed_over(self, spec: RunSpec) -> bool:
        """Whether the run's handoff was written, i.e. its Pod was created before."""

    def handoff(self, spec: RunSpec, pod_uid: str, lifetime_s: int) -> None:
        """Write the run's Pod-bound kubeconfig for the batch step (owner uid, mode 0400)."""

    def refuse(self, event: JobStarted, reason: str) -> None:
        """Tell the run's batch step (owner ``event.uid``) it gets no Pod, and why."""


class HostPort(Protocol):
    """The head node's view of users (the same directory as the Slurm nodes)."""

    def groups(self, user: str, gid: int) -> tuple[int, ...]:
        """The user's groups (primary included), as ``id -G`` shows them."""

    def home(self, user: str) -> str | None:
        """The user's home on the NAS if it exists, else None."""

    def results_dir(self, job_id: int, uid: int, gid: int) -> str:
        """Make ``<NAS>/results/<job_id>`` owned by uid:gid, never through a symlink."""

    def tools_dir(self) -> str:
        """The NAS's tools folder (relative to the NAS root), checked to be root's alone."""


@dataclass(frozen=True)
class Defaults:
    """Site choices for every Pod (from ``LauncherSettings``)."""

    nas_root: str
    default_shm_mb: int = 64
    image_pull_policy: str = "Always"
    termination_grace_s: int = 20
    deadline_margin_s: int = 300
    token_max_s: int = 7 * 24 * 3600
    scratch_size: str = "10Gi"


def token_lifetime(job: JobStatus, token_max_s: int) -> int:
    """The handoff token outlives the job's time limit by an hour (Pod-bound: dies with it)."""
    if job.time_limit_s is None:
        return token_max_s
    return max(600, min(token_max_s, job.time_limit_s + 3600))


def run_spec(
    event: JobStarted,
    job: JobStatus,
    original: bytes,
    *,
    k8s_node: str,
    groups: tuple[int, ...],
    home: str | None,
    defaults: Defaults,
) -> RunSpec:
    """Combine the event, Slurm's allocation and the script's #K8S_ directives (pure).

    Raises:
        PermanentError: the script has no usable #K8S_IMAGE (job_submit.lua should have refused).
    """
    text = original.decode("utf-8", errors="replace")
    parsed = parse_script(text)
    image = parsed.k8s_value("IMAGE")
    if image is None or not image.value.strip():
        raise PermanentError(f"job {event.job_id}: wrapped script without #K8S_IMAGE")
    start_dir = podspec.WORKSPACE
    workdir = parsed.k8s_value("WORKDIR")
    if workdir is not None:
        start_dir = workdir.value
        if not safe_path(start_dir):  # the policy refuses it too; never trust one check
            raise Refused(f"#K8S_WORKDIR {start_dir!r} is not an absolute path without '..'")
    elif parsed.last("chdir") is not None:
        start_dir = job.work_dir  # the script chose its directory: Slurm's resolution of it
    script = parsed.k8s_value("SCRIPT")
    shm_mb = defaults.default_shm_mb
    shm = parsed.k8s_value("SHM")
    if shm is not None:
        try:
            shm_mb = size_mb(shm.value)
        except ValueError:
            _log.warning("ignoring unreadable #K8S_SHM", job_id=event.job_id, value=shm.value)
    return RunSpec(
        job_id=event.job_id,
        restart_count=event.restart_count,
        user=job.user,
        uid=job.uid,
        gid=job.gid,
        groups=groups,
        job_name=job.name,
        partition=job.partition or event.partition,
        slurm_node=event.node,
        k8s_node=k8s_node,
        cpus=job.cpus,
        mem_mb=job.mem_mb,
        gpus=job.gpus,
        gpu_indices=event.gpus,
        image=image.value.strip(),
        script=original,
        work_dir=job.work_dir,
        nas_root=defaults.nas_root,
        shm_mb=shm_mb,
        time_limit_s=job.time_limit_s,
        home=home,
        array_job_id=job.array_job_id,
        array_task_id=job.array_task_id,
        submit_time=job.submit_time,
        image_pull_policy=defaults.image_pull_policy,
        termination_grace_s=defaults.termination_grace_s,
        deadline_margin_s=defaults.deadline_margin_s,
        start_dir=start_dir,
        k8s_script=script.value if script is not None else "",
        run_k8s_script=script is not None and parsed.first_command_line == 0,
        scratch_size=defaults.scratch_size,
    )


def skip_reason(event: JobStarted, job: JobStatus | None) -> str | None:
    """Why this event must not create a Pod (None: go ahead)."""
    if job is None:
        return "Slurm no longer knows the job"
    if job.restarts != event.restart_count:
        return f"the job is at restart {job.restarts}, the event is for {event.restart_count}"
    if not runnable(job):
        return f"the job is {job.state}"
    return None


def verify(event: JobStarted, job: JobStatus, original: bytes | None, policy: Policy) -> bytes:
    """Check, before any Pod, that this job is what slurm-k8s accepted, for whom it claims (pure).

    Three independent sources must agree: slurmd's environment in the prolog (the event),
    slurmctld's structured record, and the script job_submit.lua wrapped, checked again
    against the policy as it stands now. Users can write the script, the job name and the
    comment; they cannot write the AdminComment mark, the uid slurmd runs the job as, or the
    allocation.

    Returns:
        The original script to run.

    Raises:
        Refused: any disagreement; the job gets no Pod.
    """
    if not job.admin_comment.startswith(ACCEPTED_MARK):
        raise Refused(
            "this job was not accepted by the slurm-k8s submit policy (its script imitates "
            "the slurm-k8s wrapper); no Pod is made"
        )
    if original is None:
        raise Refused("the job's stored script is not the slurm-k8s wrapper; no Pod is made")
    if (job.uid, job.gid, job.user) != (event.uid, event.gid, event.user):
        raise Refused(
            f"identity mismatch: slurmd runs the job as {event.user} ({event.uid}:{event.gid}), "
            f"slurmctld records {job.user} ({job.uid}:{job.gid}); no Pod is made"
        )
    if policy.system_account(job.uid):
        raise Refused(
            f"slurm-k8s jobs do not run as {job.user} (uid {job.uid}): root and system "
            f"accounts (uid < {policy.min_uid} or > {policy.max_uid}) cannot run them"
        )
    problems = [
        format_problem(p)
        for p in check_script(
            original, policy, user=job.user, home=job.work_dir, syntax=None
        ).problems
    ]
    limits = (
        (job.cpus, policy.max_cpus, "CPUs"),
        (job.mem_mb, policy.max_mem_mb, "MB of memory"),
        (job.gpus, policy.max_gpus, "GPUs"),
    )
    problems += [
        f"allocation: {given} {what}; the limit is {limit}"
        for given, limit, what in limits
        if given > limit
    ]
    if problems:
        shown = problems[:REFUSAL_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        tail = f" (and {more} more)" if more else ""
        raise Refused("the submit policy refuses this job now: " + "; ".join(shown) + tail)
    return original


class Launcher:
    """The launcher's queue handler, over injected ports.

    Args:
        slurm: the job's allocation, script and notes.
        cluster: object creation and the handoff.
        host: users' groups and homes.
        defaults: site choices.
        policy: the submit policy as it stands (read for each job, so a change applies).
        pin_image: turns ``host/name:tag`` into ``host/name@sha256:…`` as the registry
            answers now (``shared.registry``), so a tag moved later cannot change the run.
        k8s_node: maps a Slurm node to its Kubernetes node.
    """

    def __init__(
        self,
        slurm: SlurmPort,
        cluster: ClusterPort,
        host: HostPort,
        defaults: Defaults,
        policy: Callable[[], Policy],
        pin_image: Callable[[str], str],
        k8s_node: Callable[[str], str] = str,
    ) -> None:
        self._slurm = slurm
        self._cluster = cluster
        self._host = host
        self._defaults = defaults
        self._policy = policy
        self._pin_image = pin_image
        self._k8s_node = k8s_node

    def handle(self, envelope: Envelope) -> Sequence[Envelope]:
        """Queue handler: create the run's objects for a job.started, ignore anything else."""
        body = envelope.body
        if not isinstance(body, JobStarted):
            return ()
        launched = self.launch(body)
        return () if launched is None else (Envelope.wrap(launched),)

    def launch(self, event: JobStarted) -> PodLaunched | None:
        """Create (or find) the run's objects; None when there is nothing to run.

        A job that must not run in a Pod (``Refused``, or any other permanent error such as
        an object that belongs to another job) is answered at once: its batch step prints
        the reason and fails, instead of holding the allocation while a retry cannot help.

        Raises:
            TransientError: Slurm or Kubernetes is unreachable; the event is retried.
        """
        job: JobStatus | None = None
        # Two independent round trips to slurmctld, asked at once: the script is read while
        # the job's record is listed (it is only used once the record says to).
        with ThreadPoolExecutor(1, thread_name_prefix="batch-script") as pool:
            script = pool.submit(self._slurm.batch_script, event.job_id)
            try:
                job = self._slurm.job_status(event.job_id)
                reason = skip_reason(event, job)
                if reason is not None or job is None:
                    _log.info("no Pod for this event", job_id=event.job_id, reason=reason)
                    return None
                original = self._original(job, script)
                if original is None and not job.admin_comment.startswith(ACCEPTED_MARK):
                    # A plain Slurm job (no #K8S_IMAGE): Slurm runs it itself.
                    return None
                return self._launch(event, job, verify(event, job, original, self._policy()))
            except PermanentError as exc:
                # Even an unreadable record is answered: the batch step learns why at once.
                self._refuse(event, job, str(exc))
                return None

    def _original(self, job: JobStatus, script: Future[str]) -> bytes | None:
        """The script inside our wrapper; None for any other script.

        A job without the acceptance mark is a plain Slurm job unless its script imitates
        the wrapper (refused then, with a reason); when its script cannot be read (an
        interactive allocation has none) it is left to Slurm: no Pod either way.
        """
        try:
            return extract_original_script(script.result())
        except ServiceError:
            if job.admin_comment.startswith(ACCEPTED_MARK):
                raise
            return None

    def _launch(self, event: JobStarted, job: JobStatus, original: bytes) -> PodLaunched | None:
        spec = run_spec(
            event,
            job,
            original,
            k8s_node=self._k8s_node(event.node),
            groups=self._host.groups(job.user, job.gid),
            home=self._host.home(job.user),
            defaults=self._defaults,
        )
        spec = replace(
            spec,
            image=self._pin_image(spec.image),
            requested_image=spec.image,
            tools_dir=self._host.tools_dir(),
        )
        # Before any object: a run whose results folder cannot be made safely gets no Pod.
        self._host.results_dir(spec.job_id, spec.uid, spec.gid)
        sa_uid = self._cluster.ensure(podspec.service_account(spec))
        owner = podspec.owner_reference(spec.name, sa_uid)
        # The Pod needs its ConfigMap (the kubelet would back off on a missing one) but not
        # the Role and RoleBinding, which only the runner's token (the handoff) uses: they
        # are made meanwhile, two round trips off the way to a running container. The
        # RoleBinding waits for its Role: the API server lets a launcher without the Role's
        # rights bind it only once it exists (a least-privilege launcher in the cluster was
        # refused otherwise).
        with ThreadPoolExecutor(1, thread_name_prefix="rbac") as pool:
            rbac = pool.submit(self._ensure_rbac, spec, owner)
            self._cluster.ensure(podspec.config_map(spec, owner))
            # A run handed over before whose Pod is gone was deleted by its runner once the
            # container ended (or by someone else): made again, it would run the job twice.
            created = self._cluster.ensure_pod(
                podspec.pod(spec, owner), create=not self._cluster.handed_over(spec)
            )
            rbac.result()
        if created is None:
            _log.info(
                "the run's Pod ran and is gone: not made again",
                job_id=event.job_id,
                restart_count=event.restart_count,
            )
            return None
        self._cluster.handoff(spec, created.uid, token_lifetime(job, self._defaults.token_max_s))
        self._note(job, f"pod={JOB_NAMESPACE}/{spec.name} phase={created.phase or 'Pending'}")
        _log.info(
            "pod launched",
            job_id=event.job_id,
            restart_count=event.restart_count,
            pod=spec.name,
            node=spec.k8s_node,
            image=spec.image,
        )
        return PodLaunched(
            job_id=event.job_id,
            restart_count=event.restart_count,
            namespace=JOB_NAMESPACE,
            pod_name=spec.name,
            node=spec.k8s_node,
        )

    def _ensure_rbac(self, spec: RunSpec, owner: Manifest) -> None:
        self._cluster.ensure(podspec.role(spec, owner))
        self._cluster.ensure(podspec.role_binding(spec, owner))

    def _refuse(self, event: JobStarted, job: JobStatus | None, reason: str) -> None:
        _log.warning(
            "no Pod: run refused",
            job_id=event.job_id,
            restart_count=event.restart_count,
            user=event.user,
            reason=reason,
        )
        self._cluster.refuse(event, reason)
        if job is not None:
            self._note(job, f"refused: {reason}")

    def _note(self, job: JobStatus, text: str) -> None:
        # The note is for people; a job that ended meanwhile or a busy slurmctld must not
        # undo a launch that succeeded (the watcher updates it again on the next phase).
        try:
            self._slurm.note(job, text)
        except ServiceError as exc:
            _log.warning("AdminComment not updated", job_id=job.job_id, error=str(exc))
