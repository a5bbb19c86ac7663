"""Baseline for ``make bench``: a raw Pod made from a connected Python client.

    python bench/raw_pod.py [--count 6] [--namespace slurmk8s-bench]

One ``CoreV1Api`` (kubeconfig loaded once), then for each round: ``create_namespaced_pod`` of a
plain alpine Pod (the same image as the jobs) and a watch until its container runs; the time
from the create call to the watch's "running" is the figure. Each Pod runs ``sleep 2`` and is
deleted without waiting. Prints one JSON list of seconds. ``bench/run.py`` imports
``create_and_wait`` and times the same thing inside its own run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

IMAGE = f"{os.environ.get('REGISTRY', 'nas-hub.local:5407')}/alpine:latest"


def manifest(name: str, command: str = "sleep 2") -> dict[str, Any]:
    """The plainest Pod that runs ``command`` in the jobs' image on the lab node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "slurmk8s-bench"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", command],
                }
            ],
        },
    }


def with_job_volumes(pod: dict[str, Any], config_map: str) -> dict[str, Any]:
    """The same Pod with the volumes a slurm-k8s job Pod has (in the jobs' namespace).

    The NAS claim (and its tools subPath, read-only), a ConfigMap, a memory emptyDir for
    /dev/shm and a sized scratch emptyDir with two subPaths: what the kubelet has to mount
    before the container starts, without any of slurm-k8s's own work.
    """
    pod["spec"]["volumes"] = [
        {"name": "nas", "persistentVolumeClaim": {"claimName": "nas"}},
        {"name": "script", "configMap": {"name": config_map, "defaultMode": 0o555}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    # The jobs' namespace enforces the "restricted" Pod Security profile, as job Pods pass it.
    pod["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["spec"]["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    pod["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "nas", "mountPath": "/mnt/test-k8s"},
        {"name": "nas", "mountPath": "/slurm-k8s-tools", "subPath": "slurm-jobs/.tools",
         "readOnly": True},
        {"name": "script", "mountPath": "/slurm-k8s", "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": "/workspace", "subPath": "workspace"},
        {"name": "scratch", "mountPath": "/results", "subPath": "results"},
    ]  # fmt: skip
    return pod


def seed_pod(name: str, command: str = "sleep 2") -> dict[str, Any]:
    """The seed's Pod: the jobs' image with the NAS mounted (its prolog applied a Pod with the
    NAS's PersistentVolume), in the jobs' namespace, so under its "restricted" profile."""
    pod = manifest(name, command)
    pod["spec"]["volumes"] = [{"name": "nas", "persistentVolumeClaim": {"claimName": "nas"}}]
    pod["spec"]["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = pod["spec"]["containers"][0]
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    container["volumeMounts"] = [{"name": "nas", "mountPath": "/mnt/test-k8s"}]
    return pod


def _running(pod: Any) -> bool:
    return any(s.state and s.state.running for s in (pod.status.container_statuses or []))


def create_and_wait(
    core: Any, namespace: str, name: str, timeout_s: float = 120, config_map: str = ""
) -> float:
    """Create the Pod and watch until its container runs: seconds from the create call.

    With ``config_map`` the Pod gets a job Pod's volumes (``with_job_volumes``).
    """
    from kubernetes import watch

    pod = manifest(name)
    if config_map:
        pod = with_job_volumes(pod, config_map)
    started = time.monotonic()
    core.create_namespaced_pod(namespace, pod)
    w = watch.Watch()
    try:
        for event in w.stream(
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            timeout_seconds=int(timeout_s),
        ):
            if _running(event["object"]):
                return time.monotonic() - started
    finally:
        w.stop()
    raise TimeoutError(f"pod {name} never ran")


def client() -> Any:
    """A connected CoreV1Api from $KUBECONFIG."""
    from kubernetes import client as k8s
    from kubernetes import config

    config.load_kube_config()
    return k8s.CoreV1Api()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--namespace", default="slurmk8s-bench")
    args = parser.parse_args()
    core = client()
    figures = []
    for n in range(args.count):
        name = f"raw-{uuid.uuid4().hex[:6]}-{n}"
        figures.append(create_and_wait(core, args.namespace, name))
        core.delete_namespaced_pod(name, args.namespace, grace_period_seconds=0)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
