import pytest

from shared.jobscript import resources
from shared.jobscript.images import ImageError, parse_image

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "mb"), [("500", 500), ("500M", 500), ("2G", 2048), ("1t", 1048576), ("1K", 1)]
)
def test_sizes(text: str, mb: int) -> None:
    assert resources.size_mb(text) == mb


@pytest.mark.parametrize(
    ("text", "tasks"), [("0-99%4", 100), ("1,3,5", 3), ("1-100:2", 50), ("7", 1), ("0-9,20", 11)]
)
def test_array_sizes(text: str, tasks: int) -> None:
    assert resources.array_tasks(text) == tasks


@pytest.mark.parametrize("text", ["x", "5-1", "1-10:0", "1-10%x"])
def test_bad_arrays(text: str) -> None:
    with pytest.raises(ValueError, match=r"array|range|after"):
        resources.array_tasks(text)


@pytest.mark.parametrize(
    ("text", "gpus"),
    [("gpu", 1), ("gpu:2", 2), ("gpu:a100:3", 3), ("gres/gpu:2", 2), ("gpu:a100", 1), ("nic:1", 0)],
)
def test_gres_gpus(text: str, gpus: int) -> None:
    assert resources.gres_gpus(text) == gpus


def test_gpu_specs_and_nodes() -> None:
    assert resources.gpu_spec("a100:1,v100:2") == 3
    assert resources.node_range("2-4") == (2, 4)
    assert resources.node_range("1") == (1, 1)


@pytest.mark.parametrize(
    "ref",
    [
        "nas-hub.local:5407/alpine:latest",
        "nas-hub.local:5407/lab/train",
        "localhost/x@sha256:" + "a" * 64,
        "nas-hub.local:5407/a/b:v1.2@sha256:" + "0" * 64,
    ],
)
def test_good_images(ref: str) -> None:
    assert parse_image(ref).path


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("alpine:latest", "does not name a registry"),
        ("library/alpine", "does not name a registry"),
        ("nas-hub.local:5407/Alpine", "not a valid reference"),
        ("nas-hub.local:5407/alpine:", "not a valid reference"),
        ("nas-hub.local:5407/alpine@sha256:12", "not a valid reference"),
        ("nas-hub.local:5407/alpine latest", "not a valid reference"),
    ],
)
def test_bad_images(ref: str, why: str) -> None:
    with pytest.raises(ImageError, match=why):
        parse_image(ref)
