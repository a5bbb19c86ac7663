from dataclasses import replace

import pytest

from services.runner.outcome import (
    EXIT_CANNOT_RUN,
    EXIT_LOST,
    REQUEUE_EXIT,
    PodJudge,
    Step,
)
from shared.podfacts import PodFacts

pytestmark = pytest.mark.unit

NEW = PodFacts("slurm-jobs", "job-1-r0", "Pending")
CREATING = replace(NEW, reason="ContainerCreating")
RUNNING = replace(NEW, phase="Running", started_at="2026-01-01T00:00:00+00:00")


def test_a_container_that_ended_is_final_before_the_phase_turns_terminal() -> None:
    judge = PodJudge()
    assert judge.observe(CREATING, 0).step is Step.WAIT
    assert judge.observe(RUNNING, 1).step is Step.RUNNING
    ended = replace(RUNNING, exit_code=0, reason="Completed")  # phase still Running
    verdict = judge.observe(ended, 2)
    assert (verdict.step, verdict.exit_code) == (Step.FINISHED, 0)
    assert verdict.footer == "[slurm-k8s] outcome: Succeeded exit=0"


def test_failure_and_oom_footers() -> None:
    failed = replace(RUNNING, phase="Failed", exit_code=3, reason="Error")
    assert PodJudge().observe(failed, 0).footer == "[slurm-k8s] outcome: Failed exit=3 reason=Error"
    oom = replace(failed, exit_code=137, reason="OOMKilled")
    verdict = PodJudge().observe(oom, 0)
    assert verdict.exit_code == 137
    assert verdict.footer.startswith("[slurm-k8s] outcome: Failed exit=137 reason=OOMKilled")


def test_missing_image_fails_at_once_other_pull_errors_after_the_grace() -> None:
    missing = replace(NEW, reason="ErrImagePull", message='failed to resolve: "x": not found')
    verdict = PodJudge(pull_grace_s=20).observe(missing, 0)
    assert (verdict.step, verdict.exit_code) == (Step.FAIL, EXIT_CANNOT_RUN)
    assert "reason=ErrImagePull: failed to resolve" in verdict.footer
    flaky = replace(NEW, reason="ImagePullBackOff", message="connection refused")
    judge = PodJudge(pull_grace_s=20)
    assert judge.observe(flaky, 0).step is Step.WAIT
    assert judge.observe(flaky, 10).step is Step.WAIT
    assert judge.observe(flaky, 21).step is Step.FAIL


def test_config_errors_fail_fast() -> None:
    bad = replace(NEW, reason="CreateContainerConfigError", message="configmap missing")
    judge = PodJudge()
    assert judge.observe(bad, 0).step is Step.WAIT
    assert judge.observe(bad, 6).exit_code == EXIT_CANNOT_RUN


@pytest.mark.parametrize("reason", ["OutOfnvidia.com/gpu", "UnexpectedAdmissionError", "Evicted"])
def test_kubelet_refusals_requeue(reason: str) -> None:
    refused = replace(NEW, phase="Failed", reason=reason, message="no room")
    verdict = PodJudge().observe(refused, 0)
    assert (verdict.step, verdict.exit_code) == (Step.REQUEUE, REQUEUE_EXIT)
    assert verdict.footer.startswith(f"[slurm-k8s] outcome: Requeued exit=218 reason={reason}")


def test_a_node_that_never_starts_the_pod_requeues() -> None:
    judge = PodJudge(start_timeout_s=100)
    assert judge.observe(NEW, 0).step is Step.WAIT
    assert judge.observe(NEW, 50).step is Step.WAIT
    assert judge.observe(NEW, 100).step is Step.REQUEUE
    # a slow pull is not a dead node
    slow = PodJudge(start_timeout_s=100)
    slow.observe(CREATING, 0)
    assert slow.observe(CREATING, 500).step is Step.WAIT


def test_a_vanished_pod_is_lost() -> None:
    judge = PodJudge()
    judge.observe(RUNNING, 0)
    verdict = judge.observe(None, 1)
    assert (verdict.step, verdict.exit_code, verdict.reason) == (Step.FAIL, EXIT_LOST, "PodDeleted")


def test_outgrowing_the_scratch_fails_the_job_other_evictions_requeue() -> None:
    message = 'Usage of EmptyDir volume "scratch" exceeds the limit "10Gi". '
    outgrew = replace(NEW, phase="Failed", reason="Evicted", message=message)
    verdict = PodJudge().observe(outgrew, 0)
    assert (verdict.step, verdict.exit_code) == (Step.FAIL, 1)
    pressure = replace(outgrew, message="The node was low on resource: memory.")
    assert PodJudge().observe(pressure, 0).step is Step.REQUEUE
