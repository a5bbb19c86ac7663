import pytest

from services.collector.cluster import SELECTOR, run_of
from services.collector.handlers import RunKey
from shared.jobpods import run_labels

pytestmark = pytest.mark.unit


def test_run_comes_from_the_launchers_labels() -> None:
    assert run_of(run_labels(42, 3, "alice")) == RunKey(42, 3)


@pytest.mark.parametrize(
    "labels", [{}, {"slurm-k8s.io/job-id": "x", "slurm-k8s.io/restart-count": "0"}]
)
def test_objects_without_our_labels_are_not_runs(labels: dict[str, str]) -> None:
    assert run_of(labels) is None


def test_only_objects_we_manage_are_listed() -> None:
    assert SELECTOR == "app.kubernetes.io/managed-by=slurm-k8s"
