from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from services.collector.cluster import (
    CLAIM_ANNOTATION,
    CLAIM_LEASE_S,
    SELECTOR,
    KubeCluster,
    LastSeen,
    leftover,
    run_of,
)
from services.collector.handlers import Claim, RunKey
from shared.jobpods import run_labels
from shared.kube import RateLimiter
from shared.podfacts import PodFacts

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


class AccountCore:
    """One run's ServiceAccount with a resourceVersion, patched as the API server would."""

    def __init__(self, annotations: dict[str, str] | None = None, deleting: bool = False) -> None:
        self.annotations = dict(annotations or {})
        self.version = 7
        self.deleting = deleting
        self.exists = True
        self.patches: list[Any] = []

    def read_namespaced_service_account(self, name: str, ns: str, **kw: Any) -> SimpleNamespace:
        if not self.exists:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(
            metadata=SimpleNamespace(
                resource_version=str(self.version),
                annotations=dict(self.annotations) or None,
                deletion_timestamp="2026-12-02T09:00:00Z" if self.deleting else None,
            )
        )

    def patch_namespaced_service_account(self, name: str, ns: str, body: Any, **kw: Any) -> None:
        self.patches.append((body, kw["_content_type"]))
        if isinstance(body, list):  # the release: test, then remove
            if self.annotations.get(CLAIM_ANNOTATION) != body[0]["value"]:
                raise ApiException(status=422, reason="test failed")
            del self.annotations[CLAIM_ANNOTATION]
        else:
            if body["metadata"]["resourceVersion"] != str(self.version):
                raise ApiException(status=409, reason="Conflict")
            self.annotations.update(body["metadata"]["annotations"])
        self.version += 1


def _claiming(core: AccountCore, now: float = 1000.0) -> KubeCluster:
    cluster = KubeCluster(client.ApiClient(), 10, RateLimiter(100, 10), clock=lambda: now)
    cluster._core = core  # type: ignore[assignment]
    return cluster


def test_one_of_two_collectors_claims_a_run_and_the_claim_ends_with_its_release() -> None:
    core = AccountCore()
    first, second = _claiming(core), _claiming(core)
    assert first.claim_run("job-42-r0") is Claim.CLAIMED
    assert core.patches[0][1] == "application/merge-patch+json"
    assert second.claim_run("job-42-r0") is Claim.HELD
    assert first.claim_run("job-42-r0") is Claim.CLAIMED, "its own claim, on a retry"
    second.release_run("job-42-r0")  # holds nothing: changes nothing
    assert CLAIM_ANNOTATION in core.annotations
    first.release_run("job-42-r0")
    assert core.annotations == {}
    assert second.claim_run("job-42-r0") is Claim.CLAIMED


def test_a_claim_written_between_read_and_patch_loses_on_the_resource_version() -> None:
    core = AccountCore()
    racing = _claiming(core)
    read = core.read_namespaced_service_account

    def read_then_lose(name: str, ns: str, **kw: Any) -> SimpleNamespace:
        account = read(name, ns, **kw)
        core.version += 1  # the other replica's patch lands now
        return account

    core.read_namespaced_service_account = read_then_lose  # type: ignore[method-assign]
    assert racing.claim_run("job-42-r0") is Claim.HELD


def test_a_dead_holders_claim_expires_and_is_taken_over() -> None:
    core = AccountCore({CLAIM_ANNOTATION: "other-host/17/abcd 1000"})
    assert _claiming(core, now=1000 + CLAIM_LEASE_S - 1).claim_run("job-42-r0") is Claim.HELD
    assert _claiming(core, now=1000 + CLAIM_LEASE_S).claim_run("job-42-r0") is Claim.CLAIMED
    assert not core.annotations[CLAIM_ANNOTATION].startswith("other-host/17/")


def test_a_run_being_deleted_is_held_and_one_without_an_account_is_unclaimable() -> None:
    assert _claiming(AccountCore(deleting=True)).claim_run("job-42-r0") is Claim.HELD
    gone = AccountCore()
    gone.exists = False
    assert _claiming(gone).claim_run("job-42-r0") is Claim.NO_ACCOUNT


def test_last_seen_forgets_a_state_too_old_to_be_this_runs_or_a_finished_runs() -> None:
    now = [0.0]
    seen = LastSeen(kept=10, max_age_s=3600, clock=lambda: now[0])
    ended = PodFacts("slurm-jobs", "job-1-r0", "Running", exit_code=0)
    seen.put("job-1-r0", ended)
    seen.put("job-2-r0", replace(ended, name="job-2-r0"))
    now[0] = 3000.0
    assert seen.get("job-1-r0") == ended
    seen.forget("job-1-r0")
    assert seen.get("job-1-r0") is None
    now[0] = 3601.0  # slurmctld may hand job 2's id out again: its old Pod must not answer
    assert seen.get("job-2-r0") is None


def test_last_seen_keeps_the_latest_state_of_the_newest_pods() -> None:
    seen = LastSeen(kept=2)
    running = PodFacts("slurm-jobs", "job-1-r0", "Running")
    seen.put("job-1-r0", running)
    seen.put("job-2-r0", replace(running, name="job-2-r0"))
    seen.put("job-1-r0", replace(running, exit_code=3))  # updated: now the newest
    seen.put("job-3-r0", replace(running, name="job-3-r0"))
    assert seen.get("job-2-r0") is None, "the oldest is forgotten beyond the bound"
    last = seen.get("job-1-r0")
    assert last is not None
    assert last.exit_code == 3


class GoneCore:
    def read_namespaced_pod(self, name: str, ns: str, **kw: Any) -> None:
        raise ApiException(status=404, reason="Not Found")


def test_a_deleted_pod_is_answered_with_its_last_state_seen() -> None:
    # The runner deletes its Pod once the container ended; the summary still needs its exit.
    cluster = KubeCluster(client.ApiClient(), 10, RateLimiter(100, 10))
    cluster._core = GoneCore()  # type: ignore[assignment]
    assert cluster.pod("job-42-r0") is None
    ended = PodFacts("slurm-jobs", "job-42-r0", "Running", exit_code=3, reason="Error")
    cluster._last_seen.put("job-42-r0", ended)
    assert cluster.pod("job-42-r0") == ended
