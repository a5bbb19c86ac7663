from pathlib import Path

import pytest

from shared.jobpods import LABEL_JOB_ID, handoff_path, run_labels, run_name

pytestmark = pytest.mark.unit


def test_each_run_of_a_job_has_its_own_name() -> None:
    assert run_name(42, 0) == "job-42-r0"
    assert run_name(42, 1) != run_name(42, 0)


def test_labels_link_pod_job_and_user() -> None:
    labels = run_labels(42, 1, "alice")
    assert labels[LABEL_JOB_ID] == "42"
    assert "alice" in labels.values()


def test_handoff_file_is_per_run() -> None:
    assert handoff_path(Path("/s"), 42, 1) == Path("/s/handoff/job-42-r1.kubeconfig")
