"""The collector's Kubernetes boundary: read a run's Pod, delete a run, list labelled runs.

A run's objects all carry its name; the ServiceAccount owns the ConfigMap, Role and
RoleBinding (and the Pod) through ownerReferences, so deleting it with background propagation
removes the rest. The Pod is also deleted explicitly, with a bounded grace period, because it
holds the node's GPUs and the garbage collector is in no hurry. 404 means already done.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from services.collector.handlers import RunKey
from shared.jobpods import JOB_NAMESPACE, LABEL_JOB_ID, LABEL_MANAGED, LABEL_RESTART, MANAGED_BY
from shared.kube import KubeNotFound, RateLimiter, api_call
from shared.podfacts import PodFacts, read_pod

SELECTOR = f"{LABEL_MANAGED}={MANAGED_BY}"


class KubeCluster:
    """``ClusterPort`` over the Kubernetes API.

    Args:
        api: an API client (``shared.kube.api_client``).
        grace_s: the Pod's termination grace period on delete.
        limiter: client-side rate limit shared by every call.
        namespace: the jobs namespace.
    """

    def __init__(
        self,
        api: client.ApiClient,
        grace_s: int,
        limiter: RateLimiter,
        namespace: str = JOB_NAMESPACE,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._grace_s = grace_s
        self._limiter = limiter
        self._namespace = namespace

    def pod(self, name: str) -> PodFacts | None:
        """The run's Pod, or None if it is gone."""
        self._limiter.acquire()
        return read_pod(self._core, self._namespace, name)

    def delete_run(self, name: str) -> None:
        """Delete the Pod (bounded grace) and the ServiceAccount (cascades); gone is fine."""
        self._limiter.acquire()
        try:
            with api_call():
                self._core.delete_namespaced_pod(
                    name,
                    self._namespace,
                    grace_period_seconds=self._grace_s,
                    propagation_policy="Background",
                )
        except KubeNotFound:
            pass
        self._limiter.acquire()
        try:
            with api_call():
                self._core.delete_namespaced_service_account(
                    name, self._namespace, propagation_policy="Background"
                )
        except KubeNotFound:
            pass

    def runs(self) -> list[RunKey]:
        """Runs with labelled Pods or ServiceAccounts, whatever their state."""
        keys: set[RunKey] = set()
        self._limiter.acquire()
        with api_call():
            pods = self._core.list_namespaced_pod(self._namespace, label_selector=SELECTOR)
        self._limiter.acquire()
        with api_call():
            accounts = self._core.list_namespaced_service_account(
                self._namespace, label_selector=SELECTOR
            )
        items: list[Any] = [*pods.items, *accounts.items]
        for item in items:
            key = run_of(item.metadata.labels or {})
            if key is not None:
                keys.add(key)
        return sorted(keys, key=lambda k: (k.job_id, k.restart_count))


def run_of(labels: dict[str, str]) -> RunKey | None:
    """The run an object belongs to, from its labels (None if they are not ours)."""
    try:
        return RunKey(int(labels[LABEL_JOB_ID]), int(labels[LABEL_RESTART]))
    except (KeyError, ValueError):
        return None
