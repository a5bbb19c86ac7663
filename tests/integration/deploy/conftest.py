"""Fixtures for the deployment tests: ``kubectl`` on the lab, and ``k8s/`` applied and removed.

``deployed`` applies the lab overlay (``k8s/overlays/lab``) with the broker Secret made from
the lab's AMQP_URL, waits for the in-cluster services, and removes everything it made
afterwards (Deployments, ConfigMaps, the Secret, the ServiceAccounts and RBAC), leaving the
lab's own namespaces, PV and PVC: in-cluster consumers must never outlive the test that holds
the lab lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import wait_for

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "k8s"
LAB_OVERLAY = K8S / "overlays" / "lab"
SYSTEM_NS = "slurm-k8s-system"
JOBS_NS = "slurm-jobs"
PART_OF = "app.kubernetes.io/part-of=slurm-k8s"
SERVICES = ("launcher", "collector")
# Builds the Dockerfile's image and pushes it as the overlay's slurm-k8s:dev (cached when warm).
IMAGES_SCRIPT = REPO / "lab" / "docker" / "images.sh"


@dataclass
class Kubectl:
    """``kubectl`` with the lab's kubeconfig; every call has a timeout."""

    env: dict[str, str]

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["kubectl", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def can_i(self, account: str, verb: str, resource: str, namespace: str | None) -> bool:
        """``kubectl auth can-i`` as ``system:serviceaccount:<services ns>:<account>``.

        ``resource`` may name a subresource (``pods/exec``): kubectl reads ``TYPE/NAME`` as an
        object's name, so it is passed as ``--subresource``.
        """
        where = ["--all-namespaces"] if namespace is None else ["-n", namespace]
        kind, _, sub = resource.partition("/")
        done = self(
            "auth",
            "can-i",
            verb,
            kind,
            *([f"--subresource={sub}"] if sub else []),
            *where,
            f"--as=system:serviceaccount:{SYSTEM_NS}:{account}",
            check=False,
        )
        answer = done.stdout.strip()
        if answer not in ("yes", "no"):
            pytest.fail(f"kubectl auth can-i {verb} {resource}: {done.stderr.strip()}")
        return answer == "yes"


def lab_path(lab_env: dict[str, str]) -> str:
    """The lab's PATH (env.sh prints it with a literal ``$PATH`` at the end)."""
    return lab_env.get("PATH", "$PATH").replace("$PATH", os.environ.get("PATH", ""))


@pytest.fixture(scope="session")
def kubectl(require: Callable[[str], None], lab_env: dict[str, str]) -> Kubectl:
    """kubectl against the lab cluster (skips locally, fails under CI, when it is down)."""
    require("kubernetes")
    return Kubectl({**os.environ, "KUBECONFIG": lab_env["KUBECONFIG"], "PATH": lab_path(lab_env)})


def remove_deployment(kubectl: Kubectl) -> None:
    """Delete what ``kubectl apply -k k8s/overlays/lab`` made, except the lab's namespaces."""
    kubectl(
        "delete",
        "-n",
        SYSTEM_NS,
        "deployment,configmap,secret,serviceaccount",
        "-l",
        PART_OF,
        "--ignore-not-found",
        "--wait=true",
        timeout=180,
    )
    kubectl("delete", "-n", JOBS_NS, "role,rolebinding", "-l", PART_OF, "--ignore-not-found")
    kubectl("delete", "clusterrole,clusterrolebinding", "-l", PART_OF, "--ignore-not-found")
    wait_for(
        "the in-cluster services' Pods to be gone",
        lambda: (
            not kubectl("get", "pods", "-n", SYSTEM_NS, "-l", PART_OF, "-o", "name").stdout.strip()
        ),
        timeout=120,
    )


@pytest.fixture
def deployed(
    kubectl: Kubectl, require: Callable[[str], None], lab_env: dict[str, str]
) -> Iterator[None]:
    """The lab overlay applied, launcher and collector running in the cluster; removed after."""
    for component in ("rabbitmq", "slurm", "registry"):
        require(component)
    build = subprocess.run(
        ["bash", str(IMAGES_SCRIPT), "--push"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"lab/docker/images.sh --push failed: {build.stderr[-2000:]}")
    # Through stdin: on the command line the broker password would show in ps.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "slurm-k8s-broker",
            "namespace": SYSTEM_NS,
            "labels": dict([PART_OF.split("=")]),
        },
        "stringData": {"AMQP_URL": lab_env["AMQP_URL"]},
    }
    try:
        kubectl("apply", "-f", "-", input=json.dumps(secret))
        kubectl("apply", "-k", str(LAB_OVERLAY))
        for name in SERVICES:
            kubectl(
                "rollout",
                "status",
                f"deployment/{name}",
                "-n",
                SYSTEM_NS,
                "--timeout=150s",
                timeout=180,
            )
        yield
    finally:
        _keep_logs(kubectl)
        remove_deployment(kubectl)


def _keep_logs(kubectl: Kubectl) -> None:
    """The in-cluster services' logs, kept under ``$LAB_LOG/tests/deploy`` before their Pods go."""
    where = Path(os.environ.get("LAB_LOG") or "/var/log/slurm-k8s-lab") / "tests" / "deploy"
    where.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for name in SERVICES:
        logs = kubectl(
            "logs",
            f"deployment/{name}",
            "-n",
            SYSTEM_NS,
            "--tail=-1",
            "--all-containers",
            check=False,
        )
        (where / f"{name}-{stamp}.log").write_text(logs.stdout + logs.stderr)
