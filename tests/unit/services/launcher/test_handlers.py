from dataclasses import replace
from typing import Any

import pytest

from services.launcher.handlers import Created, Defaults, Launcher, token_lifetime
from services.launcher.podspec import RunSpec
from services.launcher.slurmjob import JobDetails
from shared.errors import PermanentError
from shared.jobscript import wrap_script
from shared.messages import Envelope, JobStarted, PodLaunched

pytestmark = pytest.mark.unit

SCRIPT = (
    b"#!/bin/bash\n#SBATCH --mem=1G\n"
    b"#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n#K8S_SHM=1G\necho hi\n"
)
JOB = JobDetails(
    job_id=9,
    state="RUNNING",
    restarts=0,
    name="hello",
    user="alice",
    uid=2001,
    gid=2001,
    partition="gpu",
    node="vm",
    cpus=1,
    mem_mb=1024,
    gpus=0,
    work_dir="/tmp",
    stdout="/r/9.out",
    stderr="/r/9.out",
    time_limit_s=60,
)
EVENT = JobStarted(job_id=9, restart_count=0, node="vm", user="alice", uid=2001, gid=2001)


class FakeSlurm:
    def __init__(self, job: JobDetails | None, script: str) -> None:
        self.job_ = job
        self.script = script
        self.comments: list[str] = []
        self.fail_comment = False

    def job(self, job_id: int) -> JobDetails | None:
        return self.job_

    def batch_script(self, job_id: int) -> str:
        return self.script

    def set_admin_comment(self, job_id: int, text: str) -> None:
        if self.fail_comment:
            raise PermanentError("Job has already finished")
        self.comments.append(text)


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[str] = []
        self.handoffs: list[tuple[str, str, int]] = []

    def ensure(self, manifest: dict[str, Any]) -> str:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key not in self.objects:
            self.objects[key] = manifest
            self.created.append(manifest["kind"])
        return f"uid-{key[0]}"

    def ensure_pod(self, manifest: dict[str, Any]) -> Created:
        self.ensure(manifest)
        return Created("uid-pod", "Pending")

    def handoff(self, spec: RunSpec, pod_uid: str, lifetime_s: int) -> None:
        self.handoffs.append((spec.name, pod_uid, lifetime_s))


class FakeHost:
    def groups(self, user: str, gid: int) -> tuple[int, ...]:
        return (gid, 100)

    def home(self, user: str) -> str | None:
        return f"/mnt/test-k8s/home/{user}"


def launcher(slurm: FakeSlurm, cluster: FakeCluster) -> Launcher:
    return Launcher(
        slurm, cluster, FakeHost(), Defaults(nas_root="/mnt/test-k8s"), lambda n: f"k-{n}"
    )


def test_creates_every_object_in_order_and_reports_the_pod() -> None:
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    out = launcher(slurm, cluster).handle(Envelope.wrap(EVENT))
    assert cluster.created == ["ServiceAccount", "ConfigMap", "Role", "RoleBinding", "Pod"]
    pod = cluster.objects[("Pod", "job-9-r0")]
    assert pod["spec"]["nodeName"] == "k-vm"
    assert pod["spec"]["containers"][0]["image"] == "nas-hub.local:5407/alpine:latest"
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["sizeLimit"] == "1024Mi"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-ServiceAccount"
    assert cluster.handoffs == [("job-9-r0", "uid-pod", 60 + 3600)]
    assert slurm.comments == ["pod=slurm-jobs/job-9-r0 phase=Pending"]
    assert len(out) == 1
    body = out[0].body
    assert isinstance(body, PodLaunched)
    assert (body.pod_name, body.node) == ("job-9-r0", "k-vm")


def test_redelivery_creates_nothing_new() -> None:
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    handler = launcher(slurm, cluster)
    first = handler.handle(Envelope.wrap(EVENT))
    count = len(cluster.created)
    second = handler.handle(Envelope.wrap(EVENT))
    assert len(cluster.created) == count
    assert first[0].message_id == second[0].message_id


def test_requeued_run_gets_fresh_objects() -> None:
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    handler = launcher(slurm, cluster)
    handler.handle(Envelope.wrap(EVENT))
    slurm.job_ = replace(JOB, restarts=1)
    handler.handle(Envelope.wrap(EVENT.model_copy(update={"restart_count": 1})))
    assert ("Pod", "job-9-r1") in cluster.objects
    assert ("Pod", "job-9-r0") in cluster.objects


@pytest.mark.parametrize(
    "job",
    [
        None,
        replace(JOB, state="COMPLETED"),
        replace(JOB, state="CANCELLED"),
        replace(JOB, state="PENDING", restarts=1),
        replace(JOB, restarts=1),
    ],
)
def test_no_pod_when_slurm_no_longer_runs_this_run(job: JobDetails | None) -> None:
    cluster = FakeCluster()
    assert launcher(FakeSlurm(job, wrap_script(SCRIPT)), cluster).handle(Envelope.wrap(EVENT)) == ()
    assert cluster.objects == {}


def test_plain_slurm_jobs_are_left_to_slurm() -> None:
    cluster = FakeCluster()
    out = launcher(FakeSlurm(JOB, "#!/bin/sh\necho plain\n"), cluster).handle(Envelope.wrap(EVENT))
    assert out == ()
    assert cluster.objects == {}


def test_a_refused_admin_comment_does_not_undo_the_launch() -> None:
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    slurm.fail_comment = True
    assert len(launcher(slurm, cluster).handle(Envelope.wrap(EVENT))) == 1


def test_wrapped_script_without_image_is_permanent() -> None:
    slurm = FakeSlurm(JOB, wrap_script(b"#!/bin/sh\necho no image\n"))
    with pytest.raises(PermanentError):
        launcher(slurm, FakeCluster()).handle(Envelope.wrap(EVENT))


def test_token_lifetime() -> None:
    assert token_lifetime(replace(JOB, time_limit_s=None), 1000) == 1000
    assert token_lifetime(replace(JOB, time_limit_s=10**9), 7200) == 7200
