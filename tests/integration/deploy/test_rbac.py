"""Each in-cluster service's ServiceAccount may do what its code does, and is refused the rest.

The "may" half lists every call of services/launcher/k8s.py and services/collector/cluster.py
(the in-cluster hello in test_in_cluster.py shows it is enough); the "refused" half is what a
compromised service must not reach: Secrets anywhere, Pods outside the jobs namespace, other
namespaces' objects, cluster-wide writes, exec into job Pods, handing out permissions.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.integration.deploy.conftest import (
    JOBS_NS,
    K8S,
    SYSTEM_NS,
    Kubectl,
    remove_deployment,
)

pytestmark = pytest.mark.integration

IDENTITY_KINDS = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
J, S, ALL = JOBS_NS, SYSTEM_NS, None

MAY = [
    ("launcher", "create", "pods", J),
    ("launcher", "get", "pods", J),
    ("launcher", "create", "serviceaccounts", J),
    ("launcher", "get", "serviceaccounts", J),
    ("launcher", "create", "serviceaccounts/token", J),
    ("launcher", "create", "configmaps", J),
    ("launcher", "get", "configmaps", J),
    ("launcher", "create", "roles.rbac.authorization.k8s.io", J),
    ("launcher", "get", "roles.rbac.authorization.k8s.io", J),
    ("launcher", "create", "rolebindings.rbac.authorization.k8s.io", J),
    ("launcher", "get", "rolebindings.rbac.authorization.k8s.io", J),
    # Held only so it may create each run's Role, which grants these on the run's Pod.
    ("launcher", "delete", "pods", J),
    ("launcher", "get", "pods/log", J),
    ("collector", "get", "pods", J),
    ("collector", "list", "pods", J),
    ("collector", "watch", "pods", J),
    ("collector", "delete", "pods", J),
    ("collector", "get", "serviceaccounts", J),
    ("collector", "patch", "serviceaccounts", J),
    ("collector", "list", "serviceaccounts", J),
    ("collector", "delete", "serviceaccounts", J),
    ("collector", "list", "configmaps", J),
    ("collector", "delete", "configmaps", J),
    ("collector", "list", "roles.rbac.authorization.k8s.io", J),
    ("collector", "delete", "roles.rbac.authorization.k8s.io", J),
    ("collector", "list", "rolebindings.rbac.authorization.k8s.io", J),
    ("collector", "delete", "rolebindings.rbac.authorization.k8s.io", J),
    ("collector", "list", "nodes", ALL),
]

REFUSED = [
    *[
        (account, verb, "secrets", where)
        for account in ("launcher", "collector")
        for verb, where in (("list", ALL), ("get", J), ("get", S), ("create", J))
    ],
    ("launcher", "create", "pods", "default"),
    ("launcher", "create", "pods", S),
    ("launcher", "list", "pods", ALL),
    ("launcher", "create", "pods/exec", J),
    ("launcher", "patch", "pods", J),
    ("launcher", "delete", "serviceaccounts", J),
    ("launcher", "update", "configmaps", J),
    ("launcher", "create", "configmaps", S),
    ("launcher", "escalate", "roles.rbac.authorization.k8s.io", J),
    ("launcher", "bind", "clusterroles.rbac.authorization.k8s.io", ALL),
    ("launcher", "create", "rolebindings.rbac.authorization.k8s.io", S),
    ("launcher", "create", "clusterrolebindings.rbac.authorization.k8s.io", ALL),
    ("launcher", "list", "nodes", ALL),
    ("launcher", "create", "deployments.apps", S),
    ("collector", "create", "pods", J),
    ("collector", "delete", "pods", "default"),
    ("collector", "delete", "pods", S),
    ("collector", "list", "pods", ALL),
    ("collector", "create", "pods/exec", J),
    ("collector", "create", "serviceaccounts/token", J),
    ("collector", "create", "configmaps", J),
    ("collector", "create", "rolebindings.rbac.authorization.k8s.io", J),
    ("collector", "patch", "configmaps", J),
    ("collector", "get", "nodes", ALL),
    ("collector", "patch", "nodes", ALL),
    ("default", "list", "pods", J),
    ("default", "create", "pods", J),
]


@pytest.fixture(scope="module")
def identities(kubectl: Kubectl) -> Iterator[None]:
    """Only the ServiceAccounts and RBAC of k8s/ applied (no Deployment: nothing consumes)."""
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(K8S)).stdout) if d]
    wanted = [d for d in docs if d["kind"] in IDENTITY_KINDS]
    try:
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(wanted))
        yield
    finally:
        remove_deployment(kubectl)


@pytest.mark.parametrize(("account", "verb", "resource", "namespace"), MAY)
def test_may(
    identities: None, kubectl: Kubectl, account: str, verb: str, resource: str, namespace: str
) -> None:
    assert kubectl.can_i(account, verb, resource, namespace)


@pytest.mark.parametrize(("account", "verb", "resource", "namespace"), REFUSED)
def test_refused(
    identities: None, kubectl: Kubectl, account: str, verb: str, resource: str, namespace: str
) -> None:
    assert not kubectl.can_i(account, verb, resource, namespace)
