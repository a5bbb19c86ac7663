"""The collector's Kubernetes boundary: read a run's Pod, delete a run, list labelled runs.

A run's objects all carry its name; the ServiceAccount owns the ConfigMap, Role and
RoleBinding (and the Pod) through ownerReferences, so deleting it with background propagation
removes the rest. The Pod is also deleted explicitly, because it holds the node's GPUs and the
garbage collector is in no hurry: with a bounded grace period while its container may still
run, at once (grace 0) once it has exited (nothing to stop; the kubelet's round trip for a
graceful delete is the wait the user would see). The deletes go out together. 404 means
already done.

A run's Pod may be gone before its job has ended: the runner deletes it as soon as its
container has (the kubelet frees a deleted Pod's resources at once, a terminal one only about
a second later). ``follow_pods`` keeps the last state of every labelled Pod from a watch, so
``pod`` still answers with the container's exit, reason and image digest for the summary;
a collector that was not watching then (restarted) writes the summary from Slurm alone.

The reconcile lists every kind the launcher creates (an object whose owner is gone, or one
made after a crash between two creates, is still found by its labels) and deletes each kind
of a finished run explicitly. Every call carries a request timeout: a wedged API server must
not hang the consumer or a sweep.

The claim that lets one collector replica finish a run is an annotation on the run's
ServiceAccount, ``slurm-k8s.io/finishing: <holder> <unix time>``, written by a patch that
carries the resourceVersion read just before: of replicas racing, the API server accepts one
patch and answers 409 to the others. The claim ends with the ServiceAccount (deleted by the
finish), is removed when the finish fails, and expires after ``CLAIM_LEASE_S`` when its holder
died in between: the next collector (the reconcile's sweep) then takes it over. The lease
compares wall clocks of the replicas' hosts, which NTP keeps far closer than five minutes.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, watch

from services.collector.handlers import Claim, RunKey
from services.collector.observing import PodSeen
from shared.errors import ServiceError
from shared.jobpods import JOB_NAMESPACE, LABEL_JOB_ID, LABEL_MANAGED, LABEL_RESTART, MANAGED_BY
from shared.kube import KubeConflict, KubeNotFound, RateLimiter, api_call
from shared.logs import get_logger
from shared.podfacts import PodFacts, facts_of

SELECTOR = f"{LABEL_MANAGED}={MANAGED_BY}"
REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for every call."""
_log = get_logger(__name__)
RUN_KINDS = ("Pod", "ServiceAccount", "ConfigMap", "Role", "RoleBinding")
"""Every kind of object the launcher makes for a run (see ``services.launcher.podspec``)."""
WATCH_S = 240
"""One watch request's length; the next starts from a fresh list (which also recovers a
resourceVersion the API server no longer has)."""
LAST_SEEN_KEPT = 4096
"""Pods whose last state is kept: far more than the runs that end while a job.ended waits."""
CLAIM_ANNOTATION = "slurm-k8s.io/finishing"
CLAIM_LEASE_S = 300.0
"""How long a claim stands without its ServiceAccount being deleted: far above one finish
(each of its Slurm, NAS and API calls is bounded to seconds), so only a dead holder's lapses."""


class KubeCluster:
    """``ClusterPort`` over the Kubernetes API.

    Args:
        api: an API client (``shared.kube.api_client``).
        grace_s: the Pod's termination grace period on delete.
        limiter: client-side rate limit shared by every call.
        namespace: the jobs namespace.
        clock: wall-clock seconds, for the claims' lease.
    """

    def __init__(
        self,
        api: client.ApiClient,
        grace_s: int,
        limiter: RateLimiter,
        namespace: str = JOB_NAMESPACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._rbac = client.RbacAuthorizationV1Api(api)
        self._grace_s = grace_s
        self._limiter = limiter
        self._namespace = namespace
        self._clock = clock
        # Unique per process: a restarted collector does not take its dead self's claims
        # for its own before they expire (they may be half done, but never by it).
        self._holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._claims: dict[str, str] = {}
        self._last_seen = LastSeen(LAST_SEEN_KEPT)

    def claim_run(self, name: str) -> Claim:
        """Annotate the run's ServiceAccount as finished by this collector, if no one else is."""
        self._limiter.acquire()
        try:
            with api_call():
                account = self._core.read_namespaced_service_account(
                    name, self._namespace, _request_timeout=REQUEST_TIMEOUT
                )
        except KubeNotFound:
            return Claim.NO_ACCOUNT
        meta = account.metadata
        if meta is None or not meta.resource_version:
            return Claim.NO_ACCOUNT  # nothing to make the patch conditional on
        if meta.deletion_timestamp is not None:
            return Claim.HELD
        held = (meta.annotations or {}).get(CLAIM_ANNOTATION)
        if held is not None and not self._may_take(held):
            return Claim.HELD
        value = f"{self._holder} {self._clock():.0f}"
        # The resourceVersion makes the patch conditional: a claim written since our read
        # (or any other change) fails it with 409.
        patch = {
            "metadata": {
                "resourceVersion": meta.resource_version,
                "annotations": {CLAIM_ANNOTATION: value},
            }
        }
        self._limiter.acquire()
        try:
            with api_call():
                self._core.patch_namespaced_service_account(
                    name,
                    self._namespace,
                    patch,
                    _content_type="application/merge-patch+json",
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except (KubeConflict, KubeNotFound):
            return Claim.HELD  # claimed, or deleted by a finish, since our read
        self._claims[name] = value
        return Claim.CLAIMED

    def _may_take(self, held: str) -> bool:
        holder, _, stamp = held.rpartition(" ")
        if holder == self._holder:
            return True
        try:
            return self._clock() - float(stamp) >= CLAIM_LEASE_S
        except ValueError:
            return True  # not a claim this code wrote

    def release_run(self, name: str) -> None:
        """Remove this collector's claim, only if it is still the one on the account."""
        value = self._claims.pop(name, None)
        if value is None:
            return
        path = "/metadata/annotations/" + CLAIM_ANNOTATION.replace("~", "~0").replace("/", "~1")
        patch = [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}]
        self._limiter.acquire()
        # Best effort: a claim left behind expires (CLAIM_LEASE_S).
        with contextlib.suppress(ServiceError), api_call():
            self._core.patch_namespaced_service_account(
                name,
                self._namespace,
                patch,
                _content_type="application/json-patch+json",
                _request_timeout=REQUEST_TIMEOUT,
            )

    def pod(self, name: str) -> PodFacts | None:
        """The run's Pod; if it is gone, its last state seen (``follow_pods``), else None."""
        self._limiter.acquire()
        try:
            with api_call():
                return facts_of(
                    self._core.read_namespaced_pod(
                        name, self._namespace, _request_timeout=REQUEST_TIMEOUT
                    )
                )
        except KubeNotFound:
            return self._last_seen.get(name)

    def follow_pods(self, stop: threading.Event) -> None:
        """Keep every labelled Pod's last state (a thread's loop): list, then watch, again."""
        while not stop.is_set():
            try:
                self._follow_once(stop)
            except ServiceError as exc:
                _log.warning("pod watch interrupted", error=str(exc))
                stop.wait(2.0)

    def _follow_once(self, stop: threading.Event) -> None:
        self._limiter.acquire()
        with api_call():
            listing: Any = self._core.list_namespaced_pod(
                self._namespace, label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT
            )
        for item in listing.items:
            self._last_seen.put(item.metadata.name, facts_of(item))
        # The client's watch module has no type hints; its events are plain dicts.
        stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
        with api_call():
            for event in stream.stream(
                self._core.list_namespaced_pod,
                self._namespace,
                label_selector=SELECTOR,
                resource_version=listing.metadata.resource_version,
                timeout_seconds=WATCH_S,
                _request_timeout=(REQUEST_TIMEOUT[0], WATCH_S + REQUEST_TIMEOUT[1]),
            ):
                item = event["object"]
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._last_seen.put(item.metadata.name, facts_of(item))
                if stop.is_set():
                    stream.stop()

    def delete_run(self, name: str, *, every_kind: bool = False, ended: bool = False) -> None:
        """Delete the Pod and the ServiceAccount (cascades), concurrently; gone is fine.

        ``every_kind`` also deletes the ConfigMap, Role and RoleBinding by name, for the
        reconcile: they may have lost their owner, or the garbage collector may be behind.
        ``ended``: the Pod's container has exited: no grace period (else the bounded one).
        """
        ns, core, rbac = self._namespace, self._core, self._rbac
        deletes: list[Callable[[], Any]] = [
            lambda: core.delete_namespaced_pod(
                name,
                ns,
                grace_period_seconds=0 if ended else self._grace_s,
                propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            ),
            lambda: core.delete_namespaced_service_account(
                name, ns, propagation_policy="Background", _request_timeout=REQUEST_TIMEOUT
            ),
        ]
        if every_kind:
            deletes += [
                lambda: core.delete_namespaced_config_map(
                    name, ns, _request_timeout=REQUEST_TIMEOUT
                ),
                lambda: rbac.delete_namespaced_role_binding(
                    name, ns, _request_timeout=REQUEST_TIMEOUT
                ),
                lambda: rbac.delete_namespaced_role(name, ns, _request_timeout=REQUEST_TIMEOUT),
            ]
        with ThreadPoolExecutor(len(deletes), thread_name_prefix="delete") as pool:
            # result() re-raises the first failure (a transient one retries the whole run).
            for done in [pool.submit(self._delete, delete) for delete in deletes]:
                done.result()
        self._claims.pop(name, None)  # ended with its ServiceAccount
        self._last_seen.forget(name)

    def _delete(self, delete: Callable[[], Any]) -> None:
        self._limiter.acquire()
        try:
            with api_call():
                delete()
        except KubeNotFound:
            pass

    def runs(self) -> list[RunKey]:
        """Runs with labelled objects left: Pods, ServiceAccounts, and ownerless others."""
        ns, core, rbac = self._namespace, self._core, self._rbac
        lists: list[Callable[[], Any]] = [
            lambda: core.list_namespaced_pod(
                ns, label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT
            ),
            lambda: core.list_namespaced_service_account(
                ns, label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT
            ),
            lambda: core.list_namespaced_config_map(
                ns, label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT
            ),
            lambda: rbac.list_namespaced_role(
                ns, label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT
            ),
            lambda: rbac.list_namespaced_role_binding(
                ns, label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT
            ),
        ]
        keys: set[RunKey] = set()
        # The first two listings (Pods, ServiceAccounts) count even with an owner.
        for index, listing in enumerate(lists):
            self._limiter.acquire()
            with api_call():
                items = listing().items
            for item in items:
                key = run_of(item.metadata.labels or {})
                if key is not None and leftover(item, owned_counts=index < 2):
                    keys.add(key)
        return sorted(keys, key=lambda k: (k.job_id, k.restart_count))

    def pods(self) -> list[PodSeen]:
        """Every labelled Pod of the namespace, with its run and its node's readiness."""
        self._limiter.acquire()
        with api_call():
            listing = self._core.list_namespaced_pod(
                self._namespace, label_selector=SELECTOR, _request_timeout=REQUEST_TIMEOUT
            )
        ready = self._nodes_ready() if listing.items else {}
        seen: list[PodSeen] = []
        for item in listing.items:
            run = run_of((item.metadata.labels if item.metadata else None) or {})
            if run is not None:
                facts = facts_of(item)
                seen.append(PodSeen(run.job_id, run.restart_count, facts, ready.get(facts.node)))
        return seen

    def _nodes_ready(self) -> dict[str, bool]:
        """Node name → its Ready condition is True (one list call per sweep)."""
        self._limiter.acquire()
        with api_call():
            nodes = self._core.list_node(_request_timeout=REQUEST_TIMEOUT)
        ready: dict[str, bool] = {}
        for node in nodes.items:
            conditions = (node.status.conditions if node.status else None) or []
            name = node.metadata.name if node.metadata else None
            if name:
                ready[name] = any(c.type == "Ready" and c.status == "True" for c in conditions)
        return ready


def leftover(item: Any, *, owned_counts: bool) -> bool:
    """Whether a listed object still needs the reconcile.

    One already being deleted does not (a run finished moments ago would be finished again).
    The ConfigMap, Role and RoleBinding (``owned_counts`` False) need it only without an
    owner: with one, the garbage collector removes them once the ServiceAccount is gone, and
    listing them would finish the run again meanwhile. Pods and ServiceAccounts always count.
    """
    meta = item.metadata
    if meta.deletion_timestamp is not None:
        return False
    return owned_counts or not meta.owner_references


def run_of(labels: dict[str, str]) -> RunKey | None:
    """The run an object belongs to, from its labels (None if they are not ours)."""
    try:
        return RunKey(int(labels[LABEL_JOB_ID]), int(labels[LABEL_RESTART]))
    except (KeyError, ValueError):
        return None


class LastSeen:
    """The latest state of each Pod by name, thread-safe and bounded.

    The oldest beyond ``kept`` are forgotten, and so is a state older than ``max_age_s``: a
    run's name comes back if slurmctld ever hands out its job ids again (its state lost), and
    another job's Pod must not speak for it. A job.ended reaches the collector within seconds;
    one whose collector was not running then finds an empty memory anyway.
    """

    def __init__(
        self, kept: int, max_age_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._kept = kept
        self._max_age_s = max_age_s
        self._clock = clock
        self._facts: OrderedDict[str, tuple[float, PodFacts]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, name: str, facts: PodFacts) -> None:
        """Remember ``facts`` as the Pod's latest state."""
        with self._lock:
            self._facts[name] = (self._clock(), facts)
            self._facts.move_to_end(name)
            while len(self._facts) > self._kept:
                self._facts.popitem(last=False)

    def get(self, name: str) -> PodFacts | None:
        """The Pod's latest state seen (recently enough), or None."""
        with self._lock:
            seen = self._facts.get(name)
        if seen is None or self._clock() - seen[0] > self._max_age_s:
            return None
        return seen[1]

    def forget(self, name: str) -> None:
        """The run is finished: its Pod's state speaks for nothing any more."""
        with self._lock:
            self._facts.pop(name, None)
