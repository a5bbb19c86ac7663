"""The lab's Kubernetes: a real single-node cluster (lab/k8s) that runs job pods the way the
project needs them — restricted Pod Security, the NAS through the `nas` claim, fake GPUs from
the device plugin, images from the lab registry — with exit codes and logs readable through
the API.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

NAMESPACE = "slurm-jobs"
DEADLINE_S = 120


@pytest.fixture
def core(kubeconfig: str) -> Iterator[Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    with api:
        yield client.CoreV1Api(api)


@pytest.fixture
def registry(lab_env: dict[str, str]) -> str:
    return lab_env.get("REGISTRY") or os.environ.get("REGISTRY") or "nas-hub.local:5407"


@pytest.fixture
def nas_root(lab_env: dict[str, str]) -> Path:
    root = Path(lab_env.get("NAS_ROOT") or os.environ.get("NAS_ROOT") or "/mnt/test-k8s")
    results = root / "results"
    if not results.is_dir():
        # Standalone runs only: normally lab/nas/up.sh has made the tree with its own modes.
        results.mkdir(parents=True, exist_ok=True)
        results.chmod(0o1777)
    return root


@pytest.fixture
def pods(core: Any) -> Iterator[Callable[[dict[str, Any]], str]]:
    """Creates pods in slurm-jobs and deletes them afterwards, whatever the test's outcome."""
    created: list[str] = []

    def _create(manifest: dict[str, Any]) -> str:
        core.create_namespaced_pod(NAMESPACE, manifest)
        name = str(manifest["metadata"]["name"])
        created.append(name)
        return name

    yield _create
    for name in created:
        # Already gone is fine; cleanup must not mask the test's own result.
        with contextlib.suppress(Exception):
            core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)


def _restricted_container(image: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "job",
        "image": image,
        "command": command,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": 2001,
            "runAsGroup": 2001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **extra,
    }


def _pod(name: str, container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "lab-test"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 2001,
                "runAsGroup": 2001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            **spec,
        },
    }


def _terminated(core: Any, name: str) -> Any:
    def probe() -> Any:
        pod = core.read_namespaced_pod(name, NAMESPACE)
        for cs in pod.status.container_statuses or []:
            if cs.state and cs.state.terminated:
                return cs.state.terminated
        return None

    return wait_for(f"pod {name} to finish", probe, DEADLINE_S)


def _log_stream(core: Any, name: str, stream: str) -> str:
    return str(core.read_namespaced_pod_log(name, NAMESPACE, stream=stream))


def test_node_ready_with_four_gpus(core: Any, lab_env: dict[str, str]) -> None:
    node_name = lab_env.get("LAB_NODE") or os.uname().nodename.split(".")[0]
    node = core.read_node(node_name)
    ready = [c.status for c in node.status.conditions if c.type == "Ready"]
    assert ready == ["True"]
    assert node.status.allocatable.get("nvidia.com/gpu") == "4"


@pytest.mark.parametrize("exit_code", [0, 3])
def test_gpu_pod_writes_nas_as_user_and_reports_exit_and_logs(
    core: Any, pods: Callable[[dict[str, Any]], str], registry: str, nas_root: Path, exit_code: int
) -> None:
    name = f"labtest-gpu-{uuid.uuid4().hex[:8]}"
    out = nas_root / "results" / f"{name}.txt"
    script = (
        f"echo written-by-$(id -u) > {out} && "
        'echo "gpus=$NVIDIA_VISIBLE_DEVICES" && '
        "for d in $(echo $NVIDIA_VISIBLE_DEVICES | tr , ' '); do "
        "test -c /dev/fakegpu$d || exit 90; done; "
        "echo to-stderr >&2; "
        f"echo done-{name}; exit {exit_code}"
    )
    container = _restricted_container(
        f"{registry}/alpine:latest",
        ["/bin/sh", "-c", script],
        resources={"limits": {"nvidia.com/gpu": "1", "cpu": "100m", "memory": "64Mi"}},
        volumeMounts=[{"name": "nas", "mountPath": str(nas_root)}],
    )
    nas = {"name": "nas", "persistentVolumeClaim": {"claimName": "nas"}}
    pods(_pod(name, container, volumes=[nas]))
    try:
        terminated = _terminated(core, name)
        assert terminated.exit_code == exit_code, terminated
        log = core.read_namespaced_pod_log(name, NAMESPACE)
        assert f"done-{name}" in log
        gpus = [line for line in log.splitlines() if line.startswith("gpus=")]
        assert gpus, log
        assert gpus[0] != "gpus=", log
        # Split streams (PodLogsQuerySplitStreams, alpha in 1.37, enabled by the lab).
        assert _log_stream(core, name, "Stderr").strip() == "to-stderr"
        assert "to-stderr" not in _log_stream(core, name, "Stdout")
        assert out.read_text().strip() == "written-by-2001"
        assert out.stat().st_uid == 2001
    finally:
        out.unlink(missing_ok=True)


def test_missing_image_reports_pull_error(
    core: Any, pods: Callable[[dict[str, Any]], str], registry: str
) -> None:
    name = f"labtest-noimage-{uuid.uuid4().hex[:8]}"
    pods(_pod(name, _restricted_container(f"{registry}/does-not-exist:1", ["/bin/true"])))

    def waiting_reason() -> str | None:
        pod = core.read_namespaced_pod(name, NAMESPACE)
        for cs in pod.status.container_statuses or []:
            if (
                cs.state
                and cs.state.waiting
                and cs.state.waiting.reason
                in (
                    "ErrImagePull",
                    "ImagePullBackOff",
                )
            ):
                return str(cs.state.waiting.reason)
        return None

    assert wait_for(f"pod {name} to report an image pull error", waiting_reason, DEADLINE_S)


def test_bound_service_account_token_and_cascading_delete(core: Any) -> None:
    """Other components rely on TokenRequest and on owner-reference garbage collection."""
    from kubernetes import client

    ns = "slurm-k8s-system"
    tag = uuid.uuid4().hex[:8]
    sa = core.create_namespaced_service_account(ns, {"metadata": {"name": f"labtest-{tag}"}})
    try:
        tr = core.create_namespaced_service_account_token(
            sa.metadata.name, ns, {"spec": {"expirationSeconds": 600}}
        )
        assert tr.status.token.count(".") == 2
    finally:
        core.delete_namespaced_service_account(sa.metadata.name, ns)

    parent = core.create_namespaced_config_map(ns, {"metadata": {"name": f"labtest-parent-{tag}"}})
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": parent.metadata.name,
        "uid": parent.metadata.uid,
    }
    child = core.create_namespaced_config_map(
        ns, {"metadata": {"name": f"labtest-child-{tag}", "ownerReferences": [owner]}}
    )
    core.delete_namespaced_config_map(parent.metadata.name, ns)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map(child.metadata.name, ns)
        except client.ApiException as exc:
            return bool(exc.status == 404)
        return False

    assert wait_for("the garbage collector to delete the child", child_gone, DEADLINE_S)


# --- what an ordinary local user can reach --------------------------------------------------


def _curl_as_bob(run_as: Any, *args: str) -> Any:
    return run_as(
        "bob", ["curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", *args]
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:2379/version",
        "http://127.0.0.1:2379/v3/kv/range",
        "https://127.0.0.1:2379/v3/kv/range",
        "http://127.0.0.1:2380/members",
        "https://127.0.0.1:2380/members",
    ],
)
def test_etcd_answers_no_one_without_a_certificate(run_as: Any, url: str, core: Any) -> None:
    """Whoever can write etcd owns the cluster: a user on the machine must get nothing."""
    done = _curl_as_bob(run_as, "-k", "-X", "POST", "-d", '{"key":"Lw=="}', url)
    assert done.stdout.strip() in ("000", "400", "401", "403"), (url, done.stdout)
    # the API server, which holds the one client certificate, still reads etcd
    assert core.list_namespaced_pod(NAMESPACE, limit=1) is not None


@pytest.mark.parametrize("path", ["/pods", "/runningpods/", "/exec/slurm-jobs/x/job?command=id"])
def test_kubelet_refuses_anonymous_users(run_as: Any, lab_env: dict[str, str], path: str) -> None:
    node_ip = lab_env.get("LAB_NODE_IP", "10.255.255.1")
    done = _curl_as_bob(run_as, "-k", f"https://{node_ip}:10250{path}")
    assert done.stdout.strip() in ("000", "401", "403"), (path, done.stdout)


def test_the_api_server_gives_anonymous_users_nothing_but_discovery(run_as: Any) -> None:
    for path in ("/api/v1/namespaces/slurm-jobs/pods", "/api/v1/secrets", "/api/v1/nodes"):
        done = _curl_as_bob(run_as, "-k", f"https://127.0.0.1:6443{path}")
        assert done.stdout.strip() in ("401", "403"), (path, done.stdout)
