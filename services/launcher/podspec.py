"""The run's Kubernetes objects as plain manifests (camelCase dicts), built without any I/O.

Everything a run needs is in ``RunSpec``; ``manifests`` turns it into the ServiceAccount, the
script ConfigMap, the Role/RoleBinding that let the batch step follow (and delete) only its
own Pod, and the Pod itself. The Pod passes the "restricted" Pod Security profile: non-root
uid/gid from Slurm, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp,
and only configMap, emptyDir and PVC volumes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from shared.jobpods import (
    JOB_NAMESPACE,
    LABEL_SUBMITTED,
    LABEL_UID,
    NAS_CLAIM,
    run_labels,
    run_name,
)

Manifest = dict[str, Any]

GPU_RESOURCE = "nvidia.com/gpu"
SCRIPT_DIR = "/slurm-k8s"
SCRIPT_KEY = "script"
CONTAINER = "job"

# Runs the user's script with the interpreter its shebang names when the image has it, else
# with /bin/sh: scripts written for the cluster say #!/bin/bash, small images (busybox,
# alpine) have no bash, and sbatch itself never required the shebang to exist in an image.
# `env` shebangs (#!/usr/bin/env python3) are resolved through the image's PATH.
RUN_SHIM = r"""script=$1; shift
first=
IFS= read -r first < "$script" || true
case $first in
'#!'*)
  set -f; set -- ${first#??}; set +f
  interp=${1:-}; [ $# -gt 0 ] && shift
  if [ -n "$interp" ] && [ -x "$interp" ]; then
    case $interp in
    */env)
      if [ $# -gt 0 ] && command -v "$1" >/dev/null 2>&1; then
        exec "$interp" "$@" "$script"
      fi ;;
    *) exec "$interp" "$@" "$script" ;;
    esac
  fi
  echo "slurm-k8s: ${interp:-the interpreter} not in the image; running with /bin/sh" >&2
  ;;
esac
exec /bin/sh "$script"
"""


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's objects."""

    job_id: int
    restart_count: int
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    """Supplementary groups of the user (``os.getgrouplist``), as on a Slurm node."""
    job_name: str
    partition: str
    slurm_node: str
    k8s_node: str
    cpus: int
    mem_mb: int
    gpus: int
    gpu_indices: str
    """SLURM_JOB_GPUS from the prolog, e.g. '0,1': Slurm's view of which GRES it assigned."""
    image: str
    """What the Pod runs: ``host/name@sha256:…`` once the launcher has pinned it."""
    script: bytes
    """The user's script exactly as submitted (any bytes, not only UTF-8)."""
    work_dir: str
    nas_root: str
    shm_mb: int
    time_limit_s: int | None
    home: str | None = None
    array_job_id: int | None = None
    array_task_id: int | None = None
    submit_time: int = 0
    requested_image: str = ""
    """``#K8S_IMAGE`` as the user wrote it (kept on the Pod as an annotation)."""
    image_pull_policy: str = "Always"
    termination_grace_s: int = 20
    deadline_margin_s: int = 300
    extra_env: tuple[tuple[str, str], ...] = field(default=())

    @property
    def name(self) -> str:
        """``job-<id>-r<restart>``: the name of every object of the run."""
        return run_name(self.job_id, self.restart_count)

    @property
    def labels(self) -> dict[str, str]:
        """Labels linking each object to its job, run, user and uid.

        An existing object is adopted only if it carries all of them (``KubeRuns``).
        """
        return {
            **run_labels(self.job_id, self.restart_count, self.user),
            LABEL_UID: str(self.uid),
            LABEL_SUBMITTED: str(self.submit_time),
        }


def _meta(spec: RunSpec, owner: Manifest | None) -> Manifest:
    meta: Manifest = {"name": spec.name, "namespace": JOB_NAMESPACE, "labels": spec.labels}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


def owner_reference(name: str, uid: str) -> Manifest:
    """An ownerReference to the run's ServiceAccount: deleting it deletes the rest."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "name": name, "uid": uid}


def service_account(spec: RunSpec) -> Manifest:
    """The run's identity; its token is never mounted into the Pod (only the runner gets one)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, None),
        "automountServiceAccountToken": False,
    }


def config_map(spec: RunSpec, owner: Manifest) -> Manifest:
    """The user's original script, byte for byte (``binaryData``: not every script is UTF-8).

    ConfigMaps hold up to 1 MiB; the policy caps scripts lower.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, owner),
        "binaryData": {SCRIPT_KEY: base64.b64encode(spec.script).decode("ascii")},
        "immutable": True,
    }


def role(spec: RunSpec, owner: Manifest) -> Manifest:
    """Read, follow and delete this one Pod, read its log; nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(spec, owner),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["pods"],
                "resourceNames": [spec.name],
                "verbs": ["get", "watch", "list", "delete"],
            },
            {
                "apiGroups": [""],
                "resources": ["pods/log"],
                "resourceNames": [spec.name],
                "verbs": ["get"],
            },
        ],
    }


def role_binding(spec: RunSpec, owner: Manifest) -> Manifest:
    """Grants the run's Role to the run's ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(spec, owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": spec.name},
        "subjects": [
            {"kind": "ServiceAccount", "name": spec.name, "namespace": JOB_NAMESPACE},
        ],
    }


def job_env(spec: RunSpec) -> list[dict[str, str]]:
    """The SLURM_* variables a batch script may read, with the values of this allocation.

    GPUs: SLURM_JOB_GPUS carries Slurm's GRES indices for the record, but inside the Pod the
    device plugin decides which devices are visible (and sets the runtime's own variables), so
    CUDA_VISIBLE_DEVICES is deliberately not set: CUDA numbers visible devices from 0.
    """
    cpus, mem = str(spec.cpus), str(spec.mem_mb)
    env = {
        "SLURM_JOB_ID": str(spec.job_id),
        "SLURM_JOBID": str(spec.job_id),
        "SLURM_JOB_NAME": spec.job_name,
        "SLURM_JOB_USER": spec.user,
        "SLURM_JOB_UID": str(spec.uid),
        "SLURM_JOB_GID": str(spec.gid),
        "SLURM_CPUS_ON_NODE": cpus,
        "SLURM_JOB_CPUS_PER_NODE": cpus,
        "SLURM_MEM_PER_NODE": mem,
        "SLURM_JOB_NODELIST": spec.slurm_node,
        "SLURM_NODELIST": spec.slurm_node,
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "SLURMD_NODENAME": spec.slurm_node,
        "SLURM_NODENAME": spec.slurm_node,
        "SLURM_JOB_PARTITION": spec.partition,
        "SLURM_SUBMIT_DIR": spec.work_dir,
        "SLURM_RESTART_COUNT": str(spec.restart_count),
        "USER": spec.user,
        "LOGNAME": spec.user,
        "HOME": spec.home or spec.work_dir,
    }
    if spec.gpus:
        env["SLURM_JOB_GPUS"] = spec.gpu_indices
        env["SLURM_GPUS_ON_NODE"] = str(spec.gpus)
    if spec.array_job_id is not None and spec.array_task_id is not None:
        env["SLURM_ARRAY_JOB_ID"] = str(spec.array_job_id)
        env["SLURM_ARRAY_TASK_ID"] = str(spec.array_task_id)
    env.update(dict(spec.extra_env))
    return [{"name": key, "value": value} for key, value in env.items()]


def resources(spec: RunSpec) -> Manifest:
    """Requests == limits == the Slurm allocation (Guaranteed QoS; kubelet admission checks)."""
    amounts: dict[str, str] = {"cpu": str(spec.cpus), "memory": f"{spec.mem_mb}Mi"}
    if spec.gpus:
        amounts[GPU_RESOURCE] = str(spec.gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


IMAGE_ANNOTATION = "slurm-k8s.io/requested-image"


def pod(spec: RunSpec, owner: Manifest) -> Manifest:
    """The Pod that runs the user's script, pinned to the node Slurm chose."""
    pod_spec: Manifest = {
        # Slurm already placed the job: bypass the scheduler; kubelet admission still checks
        # that the node really has the CPUs, memory and GPUs.
        "nodeName": spec.k8s_node,
        "restartPolicy": "Never",
        "serviceAccountName": spec.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.termination_grace_s,
        "securityContext": {
            "runAsUser": spec.uid,
            "runAsGroup": spec.gid,
            "runAsNonRoot": True,
            "supplementalGroups": sorted(set(spec.groups) - {spec.gid}) or None,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["/bin/sh", "-c", RUN_SHIM, "slurm-k8s-job"],
                "args": [f"{SCRIPT_DIR}/{SCRIPT_KEY}"],
                "workingDir": spec.work_dir,
                "env": job_env(spec),
                "resources": resources(spec),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [
                    {"name": "nas", "mountPath": spec.nas_root},
                    {"name": "script", "mountPath": SCRIPT_DIR, "readOnly": True},
                    {"name": "shm", "mountPath": "/dev/shm"},
                ],
                # The reason of a failure is in the Pod status, not only in the log.
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": [
            {"name": "nas", "persistentVolumeClaim": {"claimName": NAS_CLAIM}},
            {
                "name": "script",
                "configMap": {"name": spec.name, "defaultMode": 0o555},
            },
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_mb}Mi"}},
        ],
    }
    if spec.time_limit_s is not None:
        pod_spec["activeDeadlineSeconds"] = spec.time_limit_s + spec.deadline_margin_s
    if pod_spec["securityContext"]["supplementalGroups"] is None:
        del pod_spec["securityContext"]["supplementalGroups"]
    meta = _meta(spec, owner)
    if spec.requested_image:
        meta["annotations"] = {IMAGE_ANNOTATION: spec.requested_image}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}
