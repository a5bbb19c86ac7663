"""``k8s/``: the base and the lab overlay build, say what the issue asks, and the API accepts them.

What is checked on the rendered objects: both namespaces carry Pod Security labels (the jobs'
one enforces ``restricted``); every Deployment has probes, requests and limits, its own
ServiceAccount, a hardened securityContext and its settings from the ConfigMap and the broker
Secret; no rule grants Secrets or a wildcard, and the one ClusterRole only lists nodes.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.integration.deploy.conftest import JOBS_NS, K8S, LAB_OVERLAY, SYSTEM_NS, Kubectl

pytestmark = pytest.mark.integration


def _render(kubectl: Kubectl, path: str) -> list[dict[str, Any]]:
    out = kubectl("kustomize", path).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _of(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("path", [K8S, LAB_OVERLAY], ids=["base", "lab"])
def test_renders_what_the_issue_asks(kubectl: Kubectl, path: Any) -> None:
    docs = _render(kubectl, str(path))
    namespaces = {d["metadata"]["name"]: d["metadata"]["labels"] for d in _of(docs, "Namespace")}
    assert namespaces[JOBS_NS]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "pod-security.kubernetes.io/enforce" in namespaces[SYSTEM_NS]

    deployments = {d["metadata"]["name"]: d for d in _of(docs, "Deployment")}
    assert set(deployments) == {"launcher", "collector"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == name
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", f"services.{name}"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, f"{name}: no {probe}"
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        if path == K8S:  # the lab's Pods share the host's network (its overlay says why)
            assert {"name": "metrics", "containerPort": 9464} in container["ports"]
        sources = {next(iter(s)): next(iter(s.values()))["name"] for s in container["envFrom"]}
        assert sources["secretRef"] == "slurm-k8s-broker"
        assert sources["configMapRef"].startswith("slurm-k8s-config")

    (config,) = [d for d in _of(docs, "ConfigMap") if d["metadata"]["name"].startswith("slurm")]
    metrics = (config["data"]["METRICS_PORT"], config["data"]["METRICS_HOST"])
    assert metrics == (("9464", "0.0.0.0") if path == K8S else ("0", "127.0.0.1"))

    accounts = {d["metadata"]["name"] for d in _of(docs, "ServiceAccount")}
    assert accounts == {"launcher", "collector"}
    rules = [r for kind in ("Role", "ClusterRole") for d in _of(docs, kind) for r in d["rules"]]
    for rule in rules:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"]
    (cluster_role,) = _of(docs, "ClusterRole")
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]
    assert {d["metadata"]["namespace"] for d in _of(docs, "Role")} == {JOBS_NS}


def test_the_api_server_accepts_the_lab_overlay(kubectl: Kubectl) -> None:
    done = kubectl("apply", "--dry-run=server", "-k", str(LAB_OVERLAY))
    assert "deployment.apps/launcher" in done.stdout


def test_the_api_server_accepts_the_base(kubectl: Kubectl) -> None:
    """All of the base but slurm-jobs/nas: the lab's claim of that name is bound to its local PV
    (lab/k8s/manifests/20-nas.yaml), and a bound claim's volume cannot change."""
    docs = [
        d
        for d in _render(kubectl, str(K8S))
        if not (d["kind"] == "PersistentVolumeClaim" and d["metadata"]["namespace"] == JOBS_NS)
    ]
    done = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(docs))
    assert "persistentvolume/slurm-k8s-nas-services" in done.stdout
