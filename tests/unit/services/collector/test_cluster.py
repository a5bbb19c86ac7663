from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from services.collector.cluster import SELECTOR, KubeCluster, leftover, run_of
from services.collector.handlers import RunKey
from shared.jobpods import run_labels
from shared.kube import RateLimiter

pytestmark = pytest.mark.unit


def test_run_comes_from_the_launchers_labels() -> None:
    assert run_of(run_labels(42, 3, "alice")) == RunKey(42, 3)


@pytest.mark.parametrize(
    "labels", [{}, {"slurm-k8s.io/job-id": "x", "slurm-k8s.io/restart-count": "0"}]
)
def test_objects_without_our_labels_are_not_runs(labels: dict[str, str]) -> None:
    assert run_of(labels) is None


def test_only_objects_we_manage_are_listed() -> None:
    assert SELECTOR == "app.kubernetes.io/managed-by=slurm-k8s"


class FakeCore:
    """Records the deletes; the ServiceAccount is already gone (404 is fine)."""

    def __init__(self) -> None:
        self.graces: list[int] = []
        self.accounts = 0

    def delete_namespaced_pod(self, name: str, ns: str, **kw: Any) -> None:
        self.graces.append(kw["grace_period_seconds"])

    def delete_namespaced_service_account(self, name: str, ns: str, **kw: Any) -> None:
        self.accounts += 1
        raise ApiException(status=404, reason="Not Found")


@pytest.mark.parametrize(("ended", "grace"), [(True, 0), (False, 10)])
def test_an_exited_pod_is_deleted_at_once_a_running_one_with_its_grace(
    ended: bool, grace: int
) -> None:
    cluster = KubeCluster(client.ApiClient(), 10, RateLimiter(100, 10))
    core = FakeCore()
    cluster._core = core  # type: ignore[assignment]
    cluster.delete_run("job-42-r0", ended=ended)
    assert (core.graces, core.accounts) == ([grace], 1)


def _item(deleting: bool = False, owned: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        metadata=SimpleNamespace(
            deletion_timestamp="2026-12-02T09:00:00Z" if deleting else None,
            owner_references=[SimpleNamespace(kind="ServiceAccount")] if owned else None,
        )
    )


def test_objects_the_garbage_collector_will_remove_do_not_finish_a_run_again() -> None:
    # Found by the three-replica test: a sweep listed the ConfigMap of a run finished
    # moments ago (its owner deleted, the garbage collector not done) and finished it again.
    assert not leftover(_item(owned=True), owned_counts=False)
    assert leftover(_item(), owned_counts=False), "an ownerless ConfigMap is never collected"
    assert leftover(_item(owned=True), owned_counts=True), "a Pod holds the node: always"
    assert not leftover(_item(deleting=True), owned_counts=True)
