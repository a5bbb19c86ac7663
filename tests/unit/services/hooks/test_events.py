import pytest

from services.hooks.events import MESSAGE_ID_NAMESPACE, IncompleteEnvironment, build_event
from shared.messages import Envelope, JobEnded, JobStarted, decode
from shared.messages.envelope import _NAMESPACE

pytestmark = pytest.mark.unit

# What slurmd 22.05 gave a prolog in the lab (lab-findings.md), plus a GPU job's indices.
PROLOG_ENV = {
    "SLURM_JOB_ID": "42",
    "SLURM_JOB_UID": "2001",
    "SLURM_JOB_GID": "2000",
    "SLURM_JOB_USER": "alice",
    "SLURMD_NODENAME": "node1",
    "SLURM_JOB_PARTITION": "debug",
    "SLURM_JOB_CPUS_PER_NODE": "2",
    "SLURM_JOB_RESTART_COUNT": "1",
    "SLURM_JOB_STDOUT": "/mnt/test-k8s/results/%j.out",
    "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
    "SLURM_JOB_GPUS": "0,1",
}


def test_prolog_environment_becomes_job_started() -> None:
    event = build_event("prolog", PROLOG_ENV)
    envelope = decode(event.data)  # what every consumer does with it
    body = envelope.body
    assert isinstance(body, JobStarted)
    assert (body.job_id, body.restart_count, body.node) == (42, 1, "node1")
    assert (body.user, body.uid, body.gid) == ("alice", 2001, 2000)
    assert (body.partition, body.gpus) == ("debug", "0,1")
    assert (event.type, event.key) == (envelope.type, body.idempotency_key)
    # The same id as the models give the same fact.
    assert event.message_id == str(envelope.message_id) == str(Envelope.wrap(body).message_id)
    assert MESSAGE_ID_NAMESPACE == _NAMESPACE


def test_epilog_environment_becomes_job_ended() -> None:
    event = build_event("epilog", PROLOG_ENV)
    assert isinstance(decode(event.data).body, JobEnded)
    assert event.type == "job.ended"


def test_the_same_run_always_gets_the_same_message_id() -> None:
    assert (
        build_event("prolog", PROLOG_ENV).message_id == build_event("prolog", PROLOG_ENV).message_id
    )
    requeued = {**PROLOG_ENV, "SLURM_JOB_RESTART_COUNT": "2"}
    assert (
        build_event("prolog", requeued).message_id != build_event("prolog", PROLOG_ENV).message_id
    )


def test_missing_restart_count_is_the_first_run() -> None:
    env = {k: v for k, v in PROLOG_ENV.items() if k != "SLURM_JOB_RESTART_COUNT"}
    body = decode(build_event("prolog", env).data).body
    assert isinstance(body, JobStarted)
    assert body.restart_count == 0


def test_no_gpus_is_an_empty_string() -> None:
    env = {k: v for k, v in PROLOG_ENV.items() if k != "SLURM_JOB_GPUS"}
    body = decode(build_event("prolog", env).data).body
    assert isinstance(body, JobStarted)
    assert body.gpus == ""


@pytest.mark.parametrize("missing", ["SLURM_JOB_ID", "SLURM_JOB_UID", "SLURMD_NODENAME"])
def test_incomplete_environment_is_refused(missing: str) -> None:
    env = {k: v for k, v in PROLOG_ENV.items() if k != missing}
    with pytest.raises(IncompleteEnvironment):
        build_event("prolog", env)


@pytest.mark.parametrize(
    ("name", "value"),
    [("SLURM_JOB_UID", "0"), ("SLURM_JOB_ID", "0"), ("SLURM_JOB_GID", "-1"), ("SLURM_JOB_ID", "x")],
)
def test_root_jobs_and_out_of_range_ids_are_not_ours(name: str, value: str) -> None:
    with pytest.raises(IncompleteEnvironment):
        build_event("prolog", {**PROLOG_ENV, name: value})
