from datetime import UTC, datetime

import pytest
from kubernetes import client

from shared.podfacts import PodFacts, facts_of

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


def pod(state: client.V1ContainerState, phase: str, image_id: str = "") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="job-42-r0", namespace="slurm-jobs"),
        spec=client.V1PodSpec(
            node_name="node1",
            containers=[
                client.V1Container(
                    name="job",
                    image="nas-hub.local:5407/hello:1",
                    resources=client.V1ResourceRequirements(requests={"nvidia.com/gpu": "2"}),
                )
            ],
        ),
        status=client.V1PodStatus(
            phase=phase,
            container_statuses=[
                client.V1ContainerStatus(
                    name="job",
                    image="nas-hub.local:5407/hello:1",
                    image_id=image_id,
                    ready=False,
                    restart_count=0,
                    state=state,
                )
            ],
        ),
    )


def test_terminated_container_gives_exit_reason_times_and_digest() -> None:
    state = client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(
            exit_code=137, reason="OOMKilled", started_at=T0, finished_at=T0
        )
    )
    facts = facts_of(pod(state, "Failed", "nas-hub.local:5407/hello@sha256:" + "b" * 64))
    assert (facts.exit_code, facts.reason, facts.phase) == (137, "OOMKilled", "Failed")
    assert facts.image_digest == "sha256:" + "b" * 64
    assert facts.started_at == T0.isoformat()
    assert (facts.node, facts.gpus) == ("node1", 2)
    assert facts.terminated


def test_waiting_container_gives_the_pull_failure() -> None:
    state = client.V1ContainerState(
        waiting=client.V1ContainerStateWaiting(reason="ErrImagePull", message="not found")
    )
    facts = facts_of(pod(state, "Pending"))
    assert (facts.reason, facts.message, facts.exit_code) == ("ErrImagePull", "not found", None)
    assert facts.image_digest == ""


def test_bare_image_id_digest() -> None:
    assert PodFacts("n", "p", "Running", image_id="sha256:abc").image_digest == "sha256:abc"


def test_the_launcher_s_annotations_give_the_script_and_the_results_folder() -> None:
    state = client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(exit_code=0, reason="Completed")
    )
    p = pod(state, "Succeeded")
    p.metadata.annotations = {
        "slurm-k8s.io/k8s-script": "/mnt/test-k8s/scripts/train.py",
        "slurm-k8s.io/results-dir": "/mnt/test-k8s/results/42",
    }
    facts = facts_of(p)
    assert (facts.k8s_script, facts.results_dir) == (
        "/mnt/test-k8s/scripts/train.py",
        "/mnt/test-k8s/results/42",
    )
    assert facts_of(pod(state, "Succeeded")).k8s_script == ""


def test_the_api_s_json_reads_like_the_client_s_pod() -> None:
    state = client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(
            exit_code=137, reason="OOMKilled", started_at=T0, finished_at=T0
        )
    )
    model = pod(state, "Failed", "hello@sha256:" + "b" * 64)
    as_json = {
        "metadata": {"name": "job-42-r0", "namespace": "slurm-jobs"},
        "spec": {
            "nodeName": "node1",
            "containers": [
                {
                    "name": "job",
                    "image": "nas-hub.local:5407/hello:1",
                    "resources": {"requests": {"nvidia.com/gpu": "2"}},
                }
            ],
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "job",
                    "image": "nas-hub.local:5407/hello:1",
                    "imageID": "hello@sha256:" + "b" * 64,
                    "ready": False,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "OOMKilled",
                            "startedAt": "2026-11-29T04:00:00Z",
                            "finishedAt": "2026-11-29T04:00:00Z",
                        }
                    },
                }
            ],
        },
    }
    assert facts_of(as_json) == facts_of(model)
    assert facts_of(as_json).finished_at == T0.isoformat()


def test_a_malformed_pod_gives_empty_facts_not_an_error() -> None:
    facts = facts_of({"metadata": [], "status": {"containerStatuses": "x", "phase": 3}})
    assert (facts.name, facts.phase, facts.exit_code) == ("", "", None)
