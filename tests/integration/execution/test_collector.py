"""The collector's handler and reconcile against the lab's real Slurm and Kubernetes.

Each test makes a run's objects the way the launcher does (a ServiceAccount owning the Pod,
both labelled and named job-<id>-r<n>, the Pod pinned to the lab node and run as the job's
user) for a real, tiny Slurm job run by alice, then lets the collector finish it.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from services.collector.cluster import KubeCluster
from services.collector.handlers import Collector, RunKey
from services.collector.outputs import NasFiles
from services.collector.slurm import SlurmAdapter
from shared.jobpods import JOB_NAMESPACE, handoff_path, run_labels, run_name
from shared.kube import RateLimiter, api_client
from shared.messages import Envelope, JobEnded
from shared.slurmctl import SlurmCtl
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

ALICE_UID, ALICE_GID = 2001, 2001
UNKNOWN_JOB = 999_999  # far above anything the lab's slurmctld has handed out


@pytest.fixture
def core(kubeconfig: str) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(Path(kubeconfig)))


@pytest.fixture
def results(lab_env: dict[str, str]) -> Path:
    path = Path(lab_env.get("NAS_ROOT", "/mnt/test-k8s")) / "results"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the lab's NAS is not set up")
    return path


@pytest.fixture
def collector(
    core: client.CoreV1Api, tmp_path: Path, slurm_ready: str, collector_stopped: None
) -> Collector:
    cluster = KubeCluster(core.api_client, grace_s=5, limiter=RateLimiter(20, 20))
    return Collector(SlurmAdapter(SlurmCtl()), cluster, NasFiles(tmp_path / "state"))


@pytest.fixture
def watching(
    core: client.CoreV1Api, tmp_path: Path, slurm_ready: str, collector_stopped: None
) -> Iterator[tuple[Collector, KubeCluster]]:
    """A collector whose cluster follows the Pods, as the service's does."""
    cluster = KubeCluster(core.api_client, grace_s=5, limiter=RateLimiter(20, 20))
    stop = threading.Event()
    thread = threading.Thread(target=cluster.follow_pods, args=(stop,), daemon=True)
    thread.start()
    yield Collector(SlurmAdapter(SlurmCtl()), cluster, NasFiles(tmp_path / "state")), cluster
    stop.set()


@pytest.fixture
def created(core: client.CoreV1Api) -> Iterator[list[str]]:
    """Names of runs this test created; whatever is left is deleted afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        for delete in (core.delete_namespaced_pod, core.delete_namespaced_service_account):
            try:
                delete(name, JOB_NAMESPACE, grace_period_seconds=0)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise


def sbatch(run_as: Callable[..., Any], results: Path, *args: str) -> tuple[int, Path]:
    """Submit a plain job as alice; returns its id and output path."""
    out = results / "collector-%j.out"
    done = run_as("alice", ["sbatch", "--parsable", "-o", str(out), *args])
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.strip().split(";")[0])
    return job_id, results / f"collector-{job_id}.out"


def wait_for_state(job_id: int, states: set[str], timeout: float = 90) -> str:
    def state() -> str:
        return subprocess.run(
            ["sacct", "-j", str(job_id), "-X", "-n", "-P", "--format=State"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        ).stdout.strip()

    found: str = wait_for(
        f"job {job_id} to reach {sorted(states)}",
        lambda: (now := state()).split(" ")[0] in states and now,
        timeout=timeout,
    )
    return found


def make_run(
    core: client.CoreV1Api, created: list[str], node: str, job_id: int, script: str
) -> str:
    """A ServiceAccount owning a restricted Pod, as the launcher creates them."""
    name = run_name(job_id, 0)
    labels = run_labels(job_id, 0, "alice")
    sa = core.create_namespaced_service_account(
        JOB_NAMESPACE,
        client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name, labels=labels)),
    )
    created.append(name)
    owner = client.V1OwnerReference(
        api_version="v1", kind="ServiceAccount", name=name, uid=sa.metadata.uid
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels, owner_references=[owner]),
        spec=client.V1PodSpec(
            node_name=node,
            restart_policy="Never",
            service_account_name=name,
            automount_service_account_token=False,
            security_context=client.V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=ALICE_UID,
                run_as_group=ALICE_GID,
                seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
            ),
            containers=[
                client.V1Container(
                    name="job",
                    image=f"{os.environ.get('REGISTRY', 'nas-hub.local:5407')}/alpine:latest",
                    command=["/bin/sh", "-c", script],
                    security_context=client.V1SecurityContext(
                        allow_privilege_escalation=False,
                        capabilities=client.V1Capabilities(drop=["ALL"]),
                    ),
                    resources=client.V1ResourceRequirements(
                        requests={"cpu": "100m", "memory": "32Mi"},
                        limits={"cpu": "100m", "memory": "32Mi"},
                    ),
                )
            ],
        ),
    )
    core.create_namespaced_pod(JOB_NAMESPACE, pod)
    return name


def wait_for_phase(
    core: client.CoreV1Api, name: str, phases: set[str], timeout: float = 120
) -> None:
    wait_for(
        f"Pod {name} to reach {sorted(phases)}",
        lambda: core.read_namespaced_pod(name, JOB_NAMESPACE).status.phase in phases,
        timeout=timeout,
    )


def gone(core: client.CoreV1Api, name: str, timeout: float = 60) -> bool:
    wait_for(f"Pod {name} to be gone", lambda: not exists(core, name), timeout=timeout)
    return True


def exists(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, JOB_NAMESPACE)
        return True
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise


def test_job_ended_writes_summary_and_footer_and_cleans_up(
    core: client.CoreV1Api,
    collector: Collector,
    created: list[str],
    run_as: Callable[..., Any],
    results: Path,
    slurm_ready: str,
    tmp_path: Path,
) -> None:
    # The runner's header is printed, its footer is not: as if it was SIGKILLed.
    job_id, output = sbatch(run_as, results, "--wrap", "echo '[slurm-k8s] job header'; echo hi")
    wait_for_state(job_id, {"COMPLETED"})
    name = make_run(core, created, slurm_ready, job_id, "echo from the pod; exit 3")
    wait_for_phase(core, name, {"Failed"})
    handoff = handoff_path(tmp_path / "state", job_id, 0)
    handoff.parent.mkdir(parents=True)
    handoff.write_text("kubeconfig")
    event = Envelope.wrap(
        JobEnded(
            job_id=job_id,
            restart_count=0,
            node=slurm_ready,
            user="alice",
            uid=ALICE_UID,
            gid=ALICE_GID,
            gpus="",
        )
    )

    assert collector.handle(event) == ()

    summary_file = output.with_name(output.name + ".summary.json")
    st = summary_file.stat()
    assert (st.st_uid, st.st_gid) == (ALICE_UID, ALICE_GID)
    summary = json.loads(summary_file.read_text())
    assert summary["job_id"] == job_id
    assert summary["exit_code"] == 3, "the container's exit code"
    assert summary["pod"] == f"{JOB_NAMESPACE}/{name}"
    assert summary["image_digest"].startswith("sha256:")
    assert summary["user"] == "alice"
    text = output.read_text()
    assert text.count("[slurm-k8s] outcome:") == 1
    assert "exit_code=3" in text.splitlines()[-1]
    assert gone(core, name)
    with pytest.raises(client.ApiException):
        core.read_namespaced_service_account(name, JOB_NAMESPACE)
    assert not handoff.exists()

    # Redelivery: no error, nothing changes.
    before = (summary_file.read_bytes(), output.read_bytes())
    collector.handle(event)
    assert (summary_file.read_bytes(), output.read_bytes()) == before
    output.unlink()
    summary_file.unlink()


def test_a_pod_deleted_once_its_container_ended_still_gets_its_summary(
    core: client.CoreV1Api,
    watching: tuple[Collector, KubeCluster],
    created: list[str],
    run_as: Callable[..., Any],
    results: Path,
    slurm_ready: str,
) -> None:
    # The runner deletes its Pod as soon as the container has ended, before the job ends
    # and the collector is told: the collector's watch kept the Pod's last state.
    collector, cluster = watching
    job_id, output = sbatch(run_as, results, "--wrap", "echo '[slurm-k8s] job header'; echo hi")
    wait_for_state(job_id, {"COMPLETED"})
    name = make_run(core, created, slurm_ready, job_id, "echo from the pod; exit 3")
    wait_for(
        "the container's exit",
        lambda: any(s.state.terminated for s in core.read_namespaced_pod(
            name, JOB_NAMESPACE).status.container_statuses or []),
    )  # fmt: skip
    core.delete_namespaced_pod(name, JOB_NAMESPACE, grace_period_seconds=0)
    assert gone(core, name)
    wait_for("the watch to see the deletion", lambda: (p := cluster.pod(name)) and p.exit_code)
    event = Envelope.wrap(
        JobEnded(job_id=job_id, restart_count=0, node=slurm_ready, user="alice",
                 uid=ALICE_UID, gid=ALICE_GID, gpus="")
    )  # fmt: skip

    assert collector.handle(event) == ()

    summary_file = output.with_name(output.name + ".summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["exit_code"] == 3, "the container's exit code, not Slurm's 0"
    assert summary["pod"] == f"{JOB_NAMESPACE}/{name}"
    assert summary["image_digest"].startswith("sha256:")
    assert "exit_code=3" in output.read_text().splitlines()[-1]
    with pytest.raises(client.ApiException):
        core.read_namespaced_service_account(name, JOB_NAMESPACE)
    output.unlink()
    summary_file.unlink()


def test_reconcile_removes_finished_orphans_and_keeps_running_and_unknown(
    core: client.CoreV1Api,
    collector: Collector,
    created: list[str],
    run_as: Callable[..., Any],
    results: Path,
    slurm_ready: str,
) -> None:
    finished, finished_out = sbatch(run_as, results, "--wrap", "true")
    running, running_out = sbatch(run_as, results, "--time=5", "--wrap", "sleep 240")
    try:
        wait_for_state(finished, {"COMPLETED"})
        wait_for_state(running, {"RUNNING"})
        orphan = make_run(core, created, slurm_ready, finished, "exit 0")
        alive = make_run(core, created, slurm_ready, running, "sleep 300")
        unknown = make_run(core, created, slurm_ready, UNKNOWN_JOB, "sleep 300")

        # Accounting can say COMPLETED while slurmctld still shows the job COMPLETING (its
        # epilog running); the reconcile is fail-closed and waits for slurmctld, so do we.
        results_by_run = wait_for(
            "the finished run reconciled",
            lambda: (
                (r := {x.run: x for x in collector.reconcile()})[RunKey(finished, 0)].done and r
            ),
            timeout=60,
        )

        assert results_by_run[RunKey(finished, 0)].done
        assert gone(core, orphan)
        assert not results_by_run[RunKey(running, 0)].done
        assert not results_by_run[RunKey(UNKNOWN_JOB, 0)].done
        assert exists(core, alive)
        assert exists(core, unknown)
    finally:
        subprocess.run(["scancel", str(running)], check=False)
        for path in (finished_out, running_out):
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".summary.json").unlink(missing_ok=True)
