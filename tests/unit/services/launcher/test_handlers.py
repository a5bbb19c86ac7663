import base64
from dataclasses import replace
from typing import Any

import pytest

from services.launcher.handlers import (
    Created,
    Defaults,
    Launcher,
    Refused,
    run_spec,
    token_lifetime,
    verify,
)
from services.launcher.podspec import RunSpec
from services.launcher.tools import ToolsUnusable
from shared.errors import PermanentError, TransientError
from shared.jobscript import wrap_script
from shared.jobscript.policy import Policy
from shared.jobscript.wrapping import ACCEPTED_MARK
from shared.messages import Envelope, JobStarted, PodLaunched
from shared.slurmctl import JobInfo, MalformedSlurmOutput, admin_note

pytestmark = pytest.mark.unit

SCRIPT = (
    b"#!/bin/bash\n#SBATCH --mem=1G\n"
    b"#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n#K8S_SHM=1G\necho hi\n"
)
JOB = JobInfo(
    job_id=9,
    state="RUNNING",
    reason="",
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
    work_dir="/mnt/test-k8s/home/alice",
    time_limit_s=60,
    submit_time=1_700_000_000,
    admin_comment=ACCEPTED_MARK,
)
EVENT = JobStarted(job_id=9, restart_count=0, node="vm", user="alice", uid=2001, gid=2001)


class FakeSlurm:
    def __init__(self, job: JobInfo | None, script: str) -> None:
        self.job_ = job
        self.script = script
        self.comments: list[str] = []
        self.fail_comment = False

    def job_status(self, job_id: int) -> JobInfo | None:
        return self.job_

    def batch_script(self, job_id: int) -> str:
        return self.script

    def note(self, job: JobInfo, text: str) -> None:
        if self.fail_comment:
            raise PermanentError("Job has already finished")
        self.comments.append(admin_note(job.admin_comment, text))


class FakeCluster:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[str] = []
        self.steps: list[str] = []
        """What was created and handed over, in order."""
        self.handoffs: list[tuple[str, str, int]] = []
        self.refusals: list[tuple[int, int, str]] = []
        self.foreign: set[str] = set()

    def ensure(self, manifest: dict[str, Any]) -> str:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if manifest["kind"] in self.foreign:
            raise PermanentError(f"a {key[0]} named {key[1]} already exists for another job")
        if manifest["kind"] == "RoleBinding" and ("Role", key[1]) not in self.objects:
            # The API server's escalation check: a launcher without the Role's rights may
            # bind it only once it exists.
            raise PermanentError(f"rolebindings {key[1]!r}: forbidden, no such Role yet")
        if key not in self.objects:
            self.objects[key] = manifest
            self.created.append(manifest["kind"])
            self.steps.append(manifest["kind"])
        return f"uid-{key[0]}"

    def ensure_pod(self, manifest: dict[str, Any], *, create: bool = True) -> Created | None:
        if not create and ("Pod", manifest["metadata"]["name"]) not in self.objects:
            return None
        self.ensure(manifest)
        return Created("uid-pod", "Pending")

    def handed_over(self, spec: RunSpec) -> bool:
        return any(name == spec.name for name, _, _ in self.handoffs)

    def handoff(self, spec: RunSpec, pod_uid: str, lifetime_s: int) -> None:
        self.handoffs.append((spec.name, pod_uid, lifetime_s))
        self.steps.append("handoff")

    def refuse(self, event: JobStarted, reason: str) -> None:
        self.refusals.append((event.uid, event.gid, reason))


class FakeHost:
    def __init__(self) -> None:
        self.results: list[tuple[int, int, int]] = []
        self.results_error: Exception | None = None
        self.tools_error: Exception | None = None

    def groups(self, user: str, gid: int) -> tuple[int, ...]:
        return (gid, 100)

    def home(self, user: str) -> str | None:
        return f"/mnt/test-k8s/home/{user}"

    def results_dir(self, job_id: int, uid: int, gid: int) -> str:
        if self.results_error is not None:
            raise self.results_error
        self.results.append((job_id, uid, gid))
        return f"/mnt/test-k8s/results/{job_id}"

    def tools_dir(self) -> str:
        if self.tools_error is not None:
            raise self.tools_error
        return "slurm-jobs/.tools"


DIGEST = "sha256:" + "ab" * 32


def pin(image: str) -> str:
    if "nope" in image:
        raise PermanentError(f"image {image} not found in the registry")
    return image.rsplit(":", 1)[0] + "@" + DIGEST


def launcher(
    slurm: FakeSlurm,
    cluster: FakeCluster,
    policy: Policy | None = None,
    host: FakeHost | None = None,
) -> Launcher:
    return Launcher(
        slurm,
        cluster,
        host or FakeHost(),
        Defaults(nas_root="/mnt/test-k8s"),
        lambda: policy or Policy(),
        pin,
        lambda n: f"k-{n}",
    )


def refused(slurm: FakeSlurm, cluster: FakeCluster, event: JobStarted = EVENT) -> str:
    """Handle the event; assert no object was made and one refusal was left; its reason."""
    assert launcher(slurm, cluster).handle(Envelope.wrap(event)) == ()
    assert cluster.objects == {}
    assert len(cluster.refusals) == 1
    uid, gid, reason = cluster.refusals[0]
    assert (uid, gid) == (event.uid, event.gid)  # slurmd's word decides who reads it
    assert slurm.comments[-1].endswith("refused: " + reason)
    return reason


def test_creates_every_object_in_order_and_reports_the_pod() -> None:
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    out = launcher(slurm, cluster).handle(Envelope.wrap(EVENT))
    # The owner first; the ConfigMap before the Pod, the Role before its RoleBinding (made
    # beside them); the runner's token once all exist.
    first, *between, last = cluster.steps
    assert (first, sorted(between), last) == (
        "ServiceAccount",
        ["ConfigMap", "Pod", "Role", "RoleBinding"],
        "handoff",
    )
    assert between.index("ConfigMap") < between.index("Pod")
    assert between.index("Role") < between.index("RoleBinding")
    pod = cluster.objects[("Pod", "job-9-r0")]
    assert pod["spec"]["nodeName"] == "k-vm"
    assert pod["spec"]["containers"][0]["image"] == f"nas-hub.local:5407/alpine@{DIGEST}"
    requested = pod["metadata"]["annotations"]["slurm-k8s.io/requested-image"]
    assert requested == "nas-hub.local:5407/alpine:latest"
    assert pod["spec"]["securityContext"]["runAsUser"] == 2001
    assert pod["metadata"]["labels"]["slurm-k8s.io/uid"] == "2001"
    assert pod["metadata"]["labels"]["slurm-k8s.io/submit-time"] == "1700000000"
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["sizeLimit"] == "1024Mi"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-ServiceAccount"
    assert cluster.handoffs == [("job-9-r0", "uid-pod", 60 + 3600)]
    assert slurm.comments == [f"{ACCEPTED_MARK}; pod=slurm-jobs/job-9-r0 phase=Pending"]
    assert cluster.refusals == []
    assert len(out) == 1
    body = out[0].body
    assert isinstance(body, PodLaunched)
    assert (body.pod_name, body.node) == ("job-9-r0", "k-vm")


def test_script_bytes_reach_the_pod_unchanged() -> None:
    script = SCRIPT + b"printf 'caf\xe9' | od -c\n\xff\xfe\n"
    slurm, cluster = FakeSlurm(JOB, wrap_script(script)), FakeCluster()
    launcher(slurm, cluster).handle(Envelope.wrap(EVENT))
    config = cluster.objects[("ConfigMap", "job-9-r0")]
    assert "data" not in config
    assert base64.b64decode(config["binaryData"]["script"]) == script


def test_redelivery_creates_nothing_new() -> None:
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    handler = launcher(slurm, cluster)
    first = handler.handle(Envelope.wrap(EVENT))
    count = len(cluster.created)
    second = handler.handle(Envelope.wrap(EVENT))
    assert len(cluster.created) == count
    assert first[0].message_id == second[0].message_id


def test_a_late_redelivery_after_the_runner_deleted_its_pod_makes_no_second_pod() -> None:
    # The runner deletes its Pod once the container ended, moments before Slurm hears the
    # job ended: a job.started redelivered then must not run the job a second time.
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    handler = launcher(slurm, cluster)
    handler.handle(Envelope.wrap(EVENT))
    del cluster.objects[("Pod", "job-9-r0")]
    assert handler.handle(Envelope.wrap(EVENT)) == ()
    assert ("Pod", "job-9-r0") not in cluster.objects
    assert len(cluster.handoffs) == 1


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
def test_no_pod_when_slurm_no_longer_runs_this_run(job: JobInfo | None) -> None:
    cluster = FakeCluster()
    assert launcher(FakeSlurm(job, wrap_script(SCRIPT)), cluster).handle(Envelope.wrap(EVENT)) == ()
    assert cluster.objects == {}
    assert cluster.refusals == []


def test_plain_slurm_jobs_are_left_to_slurm() -> None:
    cluster = FakeCluster()
    plain = replace(JOB, admin_comment="")
    out = launcher(FakeSlurm(plain, "#!/bin/sh\necho plain\n"), cluster).handle(
        Envelope.wrap(EVENT)
    )
    assert out == ()
    assert cluster.objects == {}
    assert cluster.refusals == []


@pytest.mark.parametrize(
    "admin_comment",
    ["", "pod=slurm-jobs/job-9-r0 phase=Running", f"x{ACCEPTED_MARK}", ACCEPTED_MARK.upper()],
)
def test_a_forged_wrapper_gets_no_pod(admin_comment: str) -> None:
    evil = SCRIPT.replace(b"alpine:latest", b"miner:latest").replace(
        b"nas-hub.local:5407", b"evil.example.com"
    )
    slurm = FakeSlurm(replace(JOB, admin_comment=admin_comment), wrap_script(evil))
    assert "not accepted by the slurm-k8s submit policy" in refused(slurm, FakeCluster())


def test_an_accepted_job_whose_script_is_not_the_wrapper_gets_no_pod() -> None:
    slurm = FakeSlurm(JOB, "#!/bin/sh\necho swapped\n")
    assert "not the slurm-k8s wrapper" in refused(slurm, FakeCluster())


@pytest.mark.parametrize(
    "job",
    [
        replace(JOB, uid=2002),
        replace(JOB, gid=2002),
        replace(JOB, user="bob"),
        replace(JOB, uid=0, gid=0, user="root"),
    ],
)
def test_slurmd_and_slurmctld_must_agree_on_the_owner(job: JobInfo) -> None:
    slurm = FakeSlurm(job, wrap_script(SCRIPT))
    assert "identity mismatch" in refused(slurm, FakeCluster())


@pytest.mark.parametrize(
    ("user", "uid"), [("root", 0), ("daemon", 1), ("sys", 999), ("nobody", 65534)]
)
def test_root_and_system_accounts_never_get_a_pod(user: str, uid: int) -> None:
    job = replace(JOB, user=user, uid=uid, gid=uid, work_dir="/tmp")
    event = EVENT.model_copy(update={"user": user, "uid": uid, "gid": uid})
    slurm = FakeSlurm(job, wrap_script(SCRIPT))
    assert "root and system accounts" in refused(slurm, FakeCluster(), event)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ((b"nas-hub.local:5407/alpine", b"evil.example.com/alpine"), "is not allowed"),
        ((b"#K8S_SHM=1G", b"#K8S_SHM=100000"), "SHM"),
        ((b"#SBATCH --mem=1G", b"#SBATCH --mem=1G\n#SBATCH -c 64"), "CPUs"),
    ],
)
def test_the_policy_is_checked_again_before_any_pod(
    change: tuple[bytes, bytes], expected: str
) -> None:
    slurm = FakeSlurm(JOB, wrap_script(SCRIPT.replace(*change)))
    reason = refused(slurm, FakeCluster())
    assert "the submit policy refuses this job now" in reason
    assert expected.lower() in reason.lower()


@pytest.mark.parametrize(
    "job", [replace(JOB, cpus=64), replace(JOB, mem_mb=10**6), replace(JOB, gpus=9)]
)
def test_an_allocation_beyond_the_policy_gets_no_pod(job: JobInfo) -> None:
    assert "allocation" in refused(FakeSlurm(job, wrap_script(SCRIPT)), FakeCluster())


def test_an_object_of_another_job_is_not_adopted_and_the_run_is_refused() -> None:
    cluster = FakeCluster()
    cluster.foreign = {"Pod"}
    slurm = FakeSlurm(JOB, wrap_script(SCRIPT))
    assert launcher(slurm, cluster).handle(Envelope.wrap(EVENT)) == ()
    assert cluster.handoffs == []
    assert "another job" in cluster.refusals[0][2]


def test_a_refused_admin_comment_does_not_undo_the_launch() -> None:
    slurm, cluster = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster()
    slurm.fail_comment = True
    assert len(launcher(slurm, cluster).handle(Envelope.wrap(EVENT))) == 1


def test_wrapped_script_without_image_is_refused_at_once() -> None:
    slurm = FakeSlurm(JOB, wrap_script(b"#!/bin/sh\necho no image\n"))
    refused(slurm, FakeCluster())


def test_an_image_the_registry_does_not_have_is_refused_before_any_object() -> None:
    slurm = FakeSlurm(JOB, wrap_script(SCRIPT.replace(b"alpine:latest", b"nope:1")))
    assert "not found in the registry" in refused(slurm, FakeCluster())


def test_an_unmarked_job_without_a_readable_script_is_left_to_slurm() -> None:
    class Interactive(FakeSlurm):
        def batch_script(self, job_id: int) -> str:
            raise TransientError("scontrol write batch_script: job has no batch script")

    cluster = FakeCluster()
    plain = replace(JOB, admin_comment="")
    assert launcher(Interactive(plain, ""), cluster).handle(Envelope.wrap(EVENT)) == ()
    assert cluster.objects == {}
    assert cluster.refusals == []
    with pytest.raises(TransientError):  # a marked job's script must be read: retried
        launcher(Interactive(JOB, ""), cluster).handle(Envelope.wrap(EVENT))


def test_an_unreadable_slurm_record_is_answered_at_once() -> None:
    class Unreadable(FakeSlurm):
        def job_status(self, job_id: int) -> JobInfo | None:
            raise MalformedSlurmOutput("squeue --json: job 9 without job_id/user_id/group_id")

    cluster = FakeCluster()
    assert (
        launcher(Unreadable(JOB, wrap_script(SCRIPT)), cluster).handle(Envelope.wrap(EVENT)) == ()
    )
    assert cluster.objects == {}
    assert cluster.refusals == [
        (2001, 2001, "squeue --json: job 9 without job_id/user_id/group_id")
    ]


def test_verify_returns_the_original() -> None:
    assert verify(EVENT, JOB, SCRIPT, Policy()) == SCRIPT
    with pytest.raises(Refused):
        verify(EVENT, replace(JOB, admin_comment=""), SCRIPT, Policy())


def test_token_lifetime() -> None:
    assert token_lifetime(replace(JOB, time_limit_s=None), 1000) == 1000
    assert token_lifetime(replace(JOB, time_limit_s=10**9), 7200) == 7200


def test_results_folder_is_made_for_the_owner_and_the_checked_tools_mounted() -> None:
    slurm, cluster, host = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster(), FakeHost()
    launcher(slurm, cluster, host=host).handle(Envelope.wrap(EVENT))
    assert host.results == [(9, 2001, 2001)]
    pod = cluster.objects[("Pod", "job-9-r0")]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/slurm-k8s-tools"]["subPath"] == "slurm-jobs/.tools"
    assert pod["metadata"]["annotations"]["slurm-k8s.io/results-dir"] == ("/mnt/test-k8s/results/9")


def test_a_results_folder_that_cannot_be_made_refuses_the_run_before_any_object() -> None:
    slurm, cluster, host = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster(), FakeHost()
    host.results_error = PermanentError("the NAS results folder cannot be opened")
    assert launcher(slurm, cluster, host=host).handle(Envelope.wrap(EVENT)) == ()
    assert cluster.objects == {}
    assert "results folder" in cluster.refusals[0][2]


def spec_of(script: bytes, job: JobInfo = JOB) -> RunSpec:
    return run_spec(
        EVENT,
        job,
        script,
        k8s_node="k",
        groups=(2001,),
        home=None,
        defaults=Defaults(nas_root="/mnt/test-k8s"),
    )


IMAGE_LINE = b"#K8S_IMAGE=nas-hub.local:5407/alpine:latest\n"


def test_working_directory_k8s_workdir_else_chdir_else_workspace() -> None:
    assert spec_of(b"#!/bin/bash\n" + IMAGE_LINE + b"pwd\n").start_dir == "/workspace"
    chdir = b"#!/bin/bash\n#SBATCH --chdir=/mnt/test-k8s/home/alice/p\n" + IMAGE_LINE + b"pwd\n"
    job = replace(JOB, work_dir="/mnt/test-k8s/home/alice/p")
    assert spec_of(chdir, job).start_dir == "/mnt/test-k8s/home/alice/p"
    both = b"#!/bin/bash\n#K8S_WORKDIR=/workspace/run\n" + IMAGE_LINE + b"pwd\n"
    assert spec_of(both, job).start_dir == "/workspace/run"


@pytest.mark.parametrize("value", ["relative/dir", "/workspace/../etc", "/a/..", ""])
def test_an_unsafe_k8s_workdir_is_refused_again_at_launch(value: str) -> None:
    script = b"#!/bin/bash\n#K8S_WORKDIR=" + value.encode() + b"\n" + IMAGE_LINE + b"pwd\n"
    with pytest.raises(Refused, match="#K8S_WORKDIR"):
        spec_of(script)


def test_k8s_script_runs_only_when_the_body_has_no_command() -> None:
    head = b"#!/bin/bash\n#K8S_SCRIPT=/mnt/test-k8s/scripts/train.py\n" + IMAGE_LINE
    documented = spec_of(head + b"python3 /mnt/test-k8s/scripts/train.py --epochs 1\n")
    assert documented.k8s_script == "/mnt/test-k8s/scripts/train.py"
    assert not documented.run_k8s_script
    run = spec_of(head + b"\n# nothing else to do\n")
    assert run.run_k8s_script
    assert spec_of(b"#!/bin/bash\n" + IMAGE_LINE).k8s_script == ""


def test_an_unusable_tools_folder_refuses_the_run_before_any_object() -> None:
    slurm, cluster, host = FakeSlurm(JOB, wrap_script(SCRIPT)), FakeCluster(), FakeHost()
    host.tools_error = ToolsUnusable("/mnt/test-k8s/slurm-jobs/.tools/bash can be changed")
    assert launcher(slurm, cluster, host=host).handle(Envelope.wrap(EVENT)) == ()
    assert cluster.objects == {}
    assert host.results == []
    assert ".tools/bash can be changed" in cluster.refusals[0][2]
