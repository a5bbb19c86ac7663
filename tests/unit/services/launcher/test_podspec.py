import base64
from dataclasses import replace
from typing import Any

import pytest

from services.launcher import podspec
from services.launcher.podspec import RunSpec
from shared.jobpods import JOB_NAMESPACE, LABEL_JOB_ID

pytestmark = pytest.mark.unit

SPEC = RunSpec(
    job_id=42,
    restart_count=1,
    user="alice",
    uid=2001,
    gid=2001,
    groups=(2001, 100),
    job_name="hello",
    partition="gpu",
    slurm_node="vm",
    k8s_node="k8s-vm",
    cpus=2,
    mem_mb=1024,
    gpus=2,
    gpu_indices="0,1",
    image="nas-hub.local:5407/alpine:latest",
    script=b"#!/bin/bash\necho hi\n",
    work_dir="/mnt/test-k8s/home/alice",
    nas_root="/mnt/test-k8s",
    shm_mb=256,
    time_limit_s=600,
)
OWNER = podspec.owner_reference("job-42-r1", "uid-1")


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def test_pod_is_pinned_named_labelled_and_owned() -> None:
    pod = podspec.pod(SPEC, OWNER)
    assert pod["metadata"]["name"] == "job-42-r1"
    assert pod["metadata"]["namespace"] == JOB_NAMESPACE
    assert pod["metadata"]["labels"][LABEL_JOB_ID] == "42"
    assert pod["metadata"]["ownerReferences"] == [OWNER]
    assert pod["spec"]["nodeName"] == "k8s-vm"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_resources_equal_the_allocation() -> None:
    res = podspec.pod(SPEC, OWNER)["spec"]["containers"][0]["resources"]
    assert (
        res["requests"]
        == res["limits"]
        == {
            "cpu": "2",
            "memory": "1024Mi",
            "nvidia.com/gpu": "2",
        }
    )
    no_gpu = podspec.resources(replace(SPEC, gpus=0))
    assert "nvidia.com/gpu" not in no_gpu["limits"]


def test_restricted_profile() -> None:
    spec = podspec.pod(SPEC, OWNER)["spec"]
    psc = spec["securityContext"]
    assert (psc["runAsUser"], psc["runAsGroup"], psc["runAsNonRoot"]) == (2001, 2001, True)
    assert psc["supplementalGroups"] == [100]
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = spec["containers"][0]["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    kinds = {next(k for k in v if k != "name") for v in spec["volumes"]}
    assert kinds <= {"persistentVolumeClaim", "configMap", "emptyDir"}
    assert "initContainers" not in spec
    for container in spec["containers"]:
        assert "privileged" not in container["securityContext"]
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_volumes_nas_script_shm_and_scratch() -> None:
    spec = podspec.pod(SPEC, OWNER)["spec"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert {p: m["name"] for p, m in mounts.items()} == {
        "/mnt/test-k8s": "nas",
        "/slurm-k8s": "script",
        "/dev/shm": "shm",
        "/workspace": "scratch",
        "/results": "scratch",
        "/slurm-k8s-tools": "nas",
    }
    assert mounts["/workspace"]["subPath"] == "workspace"
    assert mounts["/results"]["subPath"] == "results"
    # The NAS's tools folder (root's alone, checked by the launcher), never writable here.
    assert (mounts["/slurm-k8s-tools"]["subPath"], mounts["/slurm-k8s-tools"]["readOnly"]) == (
        "slurm-jobs/.tools",
        True,
    )
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["nas"]["persistentVolumeClaim"]["claimName"] == "nas"
    assert vols["script"]["configMap"]["defaultMode"] == 0o555
    assert vols["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Mi"}
    assert vols["scratch"]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert podspec.pod(replace(SPEC, scratch_size="2Gi"), OWNER)["spec"]["volumes"][-1][
        "emptyDir"
    ] == {"sizeLimit": "2Gi"}
    assert spec["containers"][0]["workingDir"] == "/workspace"


def test_time_limit_gives_a_deadline_and_grace_fits_killwait() -> None:
    spec = podspec.pod(SPEC, OWNER)["spec"]
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["terminationGracePeriodSeconds"] <= 20
    assert (
        "activeDeadlineSeconds" not in podspec.pod(replace(SPEC, time_limit_s=None), OWNER)["spec"]
    )


def test_slurm_environment() -> None:
    env = env_of(podspec.pod(SPEC, OWNER))
    assert env["SLURM_JOB_ID"] == "42"
    assert env["SLURM_RESTART_COUNT"] == "1"
    assert env["SLURM_CPUS_ON_NODE"] == "2"
    assert env["SLURM_MEM_PER_NODE"] == "1024"
    assert env["SLURM_JOB_NODELIST"] == "vm"
    assert env["SLURM_JOB_GPUS"] == "0,1"
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert "SLURM_ARRAY_TASK_ID" not in env
    arr = env_of(podspec.pod(replace(SPEC, array_job_id=40, array_task_id=2, gpus=0), OWNER))
    assert (arr["SLURM_ARRAY_JOB_ID"], arr["SLURM_ARRAY_TASK_ID"]) == ("40", "2")
    assert "SLURM_JOB_GPUS" not in arr


def test_script_runs_through_the_shim_under_the_static_bash() -> None:
    c = podspec.pod(SPEC, OWNER)["spec"]["containers"][0]
    assert c["command"][:2] == ["/slurm-k8s-tools/bash", "-c"]
    assert c["args"] == [
        "/slurm-k8s-tools",
        "/slurm-k8s/script",
        "/workspace",
        "/results",
        "/mnt/test-k8s/results/42",
    ]
    cm = podspec.config_map(SPEC, OWNER)
    assert base64.b64decode(cm["binaryData"]["script"]) == SPEC.script


def test_k8s_script_and_workdir_reach_the_container() -> None:
    spec = replace(
        SPEC,
        k8s_script="/mnt/test-k8s/scripts/train.py",
        start_dir="/workspace/run",
    )
    pod = podspec.pod(spec, OWNER)
    c = pod["spec"]["containers"][0]
    assert c["args"][1:3] == ["/slurm-k8s/script", "/workspace/run"]
    env = env_of(pod)
    assert env["SLURM_K8S_SCRIPT"] == "/mnt/test-k8s/scripts/train.py"
    assert env["SLURM_K8S_WORKDIR"] == "/workspace/run"
    assert env["SLURM_K8S_RESULTS"] == "/mnt/test-k8s/results/42"
    assert pod["metadata"]["annotations"]["slurm-k8s.io/k8s-script"] == spec.k8s_script
    ran = podspec.pod(replace(spec, run_k8s_script=True), OWNER)["spec"]["containers"][0]
    assert ran["args"][1] == "/mnt/test-k8s/scripts/train.py"


def test_role_allows_only_its_own_pod() -> None:
    rules = podspec.role(SPEC, OWNER)["rules"]
    assert all(rule["resourceNames"] == ["job-42-r1"] for rule in rules)
    verbs = {v for rule in rules for v in rule["verbs"]}
    assert verbs <= {"get", "watch", "list", "delete"}
    binding = podspec.role_binding(SPEC, OWNER)
    assert binding["subjects"][0]["name"] == "job-42-r1"
    sa = podspec.service_account(SPEC)
    assert "ownerReferences" not in sa["metadata"]
