import pytest

from shared.jobscript.wrapping import ORIGINAL_MARKER, extract_original_script, wrap_script

pytestmark = pytest.mark.unit


def test_round_trip() -> None:
    original = b"#!/bin/bash\n#K8S_IMAGE=x/y\n" + bytes(range(256)) * 3
    wrapper = wrap_script(original)
    assert wrapper.startswith(
        "#!/bin/sh\n"
        "# slurm-k8s: this job runs in a Kubernetes Pod; this batch step only follows it.\n"
        "exec /opt/slurm-k8s/venv/bin/python -m services.runner\n"
        f"{ORIGINAL_MARKER}\n# "
    )
    assert all(len(line) <= 78 for line in wrapper.splitlines()[4:])
    assert extract_original_script(wrapper) == original


def test_not_a_wrapper() -> None:
    assert extract_original_script("#!/bin/sh\necho hi\n") is None
    assert extract_original_script(wrap_script(b"x").replace("# eA==", "# !!")) is None


def test_empty_original() -> None:
    assert extract_original_script(wrap_script(b"")) == b""
