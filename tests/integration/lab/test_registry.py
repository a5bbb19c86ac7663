"""The lab registry's access model, tried as a local user would: anyone may pull, nobody may
push, overwrite or delete without the lab's credentials (issue 7, "Replacing everyone's image"),
the registry behind the front is out of users' reach, and an image resolved to its digest by
``shared.registry`` runs in a job Pod.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.registry import ImageNotFound, resolve_digest
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

RunAs = Callable[..., "subprocess.CompletedProcess[str]"]  # the conftest's run_as fixture
LAB_STATE = Path(os.environ.get("LAB_STATE", "/var/lib/slurm-k8s-lab"))
REG_SOCK = Path("/run/slurm-k8s-lab/registry/registry.sock")
NAMESPACE = "slurm-jobs"
DEADLINE_S = 120
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
# Refusals: 401 (no or wrong credentials), 403, 404 (not an API path the front serves), 405
# (method not allowed). Never 2xx (accepted) nor 5xx (reached something that broke).
REFUSED = {400, 401, 403, 404, 405}


@pytest.fixture(scope="module")
def registry(lab_env: dict[str, str]) -> str:
    return lab_env.get("REGISTRY") or "nas-hub.local:5407"


@pytest.fixture
def front(require: Callable[[str], None], registry: str) -> str:
    """The registry's address, once it answers an anonymous read."""
    require("registry")
    return registry


@pytest.fixture
def authfile(front: str, run_as: RunAs) -> Path:
    """skopeo's auth.json with the lab's push credentials (root only: run_as needs root)."""
    path = LAB_STATE / "registry" / "auth.json"
    if not path.is_file():
        pytest.fail(f"the registry is up but {path} is missing (lab/k8s/up.sh makes it)")
    return path


def _resolve(registry: str, image: str) -> str:
    return resolve_digest(f"{registry}/{image}", 10.0, plain_http={registry})


def _digest(registry: str, image: str) -> str:
    return _resolve(registry, image).rpartition("@")[2]


def _curl(run_as: RunAs, user: str, *args: str) -> int:
    """HTTP status of one curl request run as `user` (000 when no HTTP answer came)."""
    done = run_as(user, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args])
    return int(done.stdout.strip() or 0)


def test_anonymous_pull_works(front: str, run_as: RunAs) -> None:
    done = run_as(
        "alice", ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{front}/alpine"]
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    layer = manifest["layers"][0]["digest"]
    base = f"http://{front}/v2/alpine"
    assert (
        _curl(run_as, "alice", "-I", "-H", f"Accept: {MANIFEST_V2}", f"{base}/manifests/latest")
        == 200
    )
    assert _curl(run_as, "alice", f"{base}/blobs/{layer}") == 200
    assert _curl(run_as, "alice", f"http://{front}/v2/_catalog") == 200


def _attacks(front: str, manifest: str, layer: str) -> list[tuple[str, list[str]]]:
    """Every way to write that the API offers, plus path and method tricks around the front.

    `manifest` is alpine:latest's manifest digest, `layer` a blob of python:3.
    """
    base = f"http://{front}/v2"
    digest = layer
    fake = str(uuid.uuid4())
    body = ["-H", f"Content-Type: {MANIFEST_V2}", "--data-binary", '{"schemaVersion":2}']
    return [
        ("PUT manifest by tag", ["-X", "PUT", *body, f"{base}/alpine/manifests/latest"]),
        ("PUT manifest new repo", ["-X", "PUT", *body, f"{base}/evil/manifests/latest"]),
        ("POST blob upload", ["-X", "POST", f"{base}/alpine/blobs/uploads/"]),
        (
            "POST cross-repo mount",
            ["-X", "POST", f"{base}/alpine/blobs/uploads/?mount={digest}&from=python"],
        ),
        ("POST monolithic upload", ["-X", "POST", f"{base}/alpine/blobs/uploads/?digest={digest}"]),
        (
            "PATCH upload chunk",
            ["-X", "PATCH", "--data-binary", "x", f"{base}/alpine/blobs/uploads/{fake}"],
        ),
        ("PUT upload end", ["-X", "PUT", f"{base}/alpine/blobs/uploads/{fake}?digest={digest}"]),
        ("DELETE manifest by digest", ["-X", "DELETE", f"{base}/alpine/manifests/{manifest}"]),
        ("DELETE manifest by tag", ["-X", "DELETE", f"{base}/alpine/manifests/latest"]),
        ("DELETE blob", ["-X", "DELETE", f"{base}/alpine/blobs/{digest}"]),
        ("DELETE upload", ["-X", "DELETE", f"{base}/alpine/blobs/uploads/{fake}"]),
        (
            "PUT wrong password",
            ["-X", "PUT", "-u", "labpush:guess", *body, f"{base}/alpine/manifests/latest"],
        ),
        ("PUT empty user", ["-X", "PUT", "-u", ":", *body, f"{base}/alpine/manifests/latest"]),
        (
            "PUT double slash",
            ["--path-as-is", "-X", "PUT", *body, f"http://{front}//v2/alpine/manifests/latest"],
        ),
        (
            "PUT dot segments",
            ["--path-as-is", "-X", "PUT", *body, f"http://{front}/x/../v2/alpine/manifests/latest"],
        ),
        (
            "PUT encoded name",
            ["--path-as-is", "-X", "PUT", *body, f"{base}/%61lpine/manifests/latest"],
        ),
        ("PUT upper-case V2", ["-X", "PUT", *body, f"http://{front}/V2/alpine/manifests/latest"]),
        ("PUT ping path", ["-X", "PUT", *body, f"{base}/"]),
        ("OPTIONS", ["-X", "OPTIONS", f"{base}/alpine/manifests/latest"]),
        ("made-up method", ["-X", "FROB", f"{base}/alpine/manifests/latest"]),
        (
            "method override header",
            [
                "-X",
                "POST",
                "-H",
                "X-HTTP-Method-Override: DELETE",
                f"{base}/alpine/manifests/latest",
            ],
        ),
        ("HTTP/1.0 PUT", ["-0", "-X", "PUT", *body, f"{base}/alpine/manifests/latest"]),
    ]


def test_anonymous_writes_are_refused_as_a_class(front: str, run_as: RunAs) -> None:
    before = {image: _digest(front, image) for image in ("alpine:latest", "python:3")}
    raw = run_as(
        "bob", ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{front}/python:3"]
    )
    layer = json.loads(raw.stdout)["layers"][0]["digest"]
    answers = {
        what: _curl(run_as, "bob", "--max-time", "10", *args)
        for what, args in _attacks(front, before["alpine:latest"], layer)
    }
    accepted = {what: code for what, code in answers.items() if code not in REFUSED}
    assert not accepted, f"requests not refused: {accepted} (all: {answers})"
    # A GET cannot be turned into a write either.
    assert _curl(
        run_as,
        "bob",
        "-H",
        "X-HTTP-Method-Override: DELETE",
        f"http://{front}/v2/alpine/manifests/latest",
    ) in {200, 404}
    # The harm did not happen: every tag still names what it named.
    assert {image: _digest(front, image) for image in before} == before
    with pytest.raises(ImageNotFound):
        _resolve(front, "evil:latest")


def test_skopeo_overwrite_of_alpine_is_refused(front: str, run_as: RunAs) -> None:
    before = _digest(front, "alpine:latest")
    done = run_as(
        "bob",
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{front}/pause:3.10",
            f"docker://{front}/alpine:latest",
        ],
        timeout=120,
    )
    assert done.returncode != 0
    assert "unauthorized" in done.stderr.lower() or "authentication" in done.stderr.lower()
    assert _digest(front, "alpine:latest") == before


def test_the_registry_behind_the_front_is_out_of_users_reach(front: str, run_as: RunAs) -> None:
    # Only the front (nginx) listens for TCP; the registry serves a unix socket users cannot open.
    listeners = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    assert '"docker-registry"' not in listeners
    assert REG_SOCK.is_socket()
    assert _curl(run_as, "alice", "--unix-socket", str(REG_SOCK), "http://registry/v2/") == 0
    for path in (REG_SOCK.parent, LAB_STATE / "registry" / "data"):
        assert run_as("alice", ["test", "-w", str(path)]).returncode != 0, path
    for secret in ("credentials", "auth.json", "htpasswd"):
        assert run_as("alice", ["test", "-r", str(LAB_STATE / "registry" / secret)]).returncode != 0


def test_authenticated_push_works_and_deletes_stay_off(front: str, authfile: Path) -> None:
    done = subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--dest-authfile",
            str(authfile),
            f"docker://{front}/pause:3.10",
            f"docker://{front}/labtest/pushed:latest",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pushed = _digest(front, "labtest/pushed:latest")
    assert pushed == _digest(front, "pause:3.10")
    # Nothing in the lab deletes images: the registry refuses deletes even with credentials.
    creds = dict(
        line.split("=", 1)
        for line in (LAB_STATE / "registry" / "credentials").read_text().splitlines()
        if "=" in line
    )
    code = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-K",
            "-",
            "-X",
            "DELETE",
            f"http://{front}/v2/labtest/pushed/manifests/{pushed}",
        ],
        input=f'user = "{creds["user"]}:{creds["password"]}"\n',
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert code == "405"
    assert _digest(front, "labtest/pushed:latest") == pushed


@pytest.mark.parametrize("image", ["alpine:latest", "python:3", "pause:3.10"])
def test_resolve_digest_matches_skopeo(front: str, image: str) -> None:
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{front}/{image}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    name = image.partition(":")[0]
    assert _resolve(front, image) == f"{front}/{name}@{json.loads(inspected)['Digest']}"


def test_unknown_image_is_a_clear_permanent_error(front: str) -> None:
    with pytest.raises(ImageNotFound, match=f"image {front}/nope:1 not found in the registry"):
        _resolve(front, "nope:1")


@pytest.fixture
def core(kubeconfig: str) -> Iterator[Any]:
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    with api:
        yield client.CoreV1Api(api)


def test_pod_runs_the_resolved_digest(front: str, core: Any) -> None:
    pinned = _resolve(front, "alpine:latest")
    name = f"labtest-digest-{uuid.uuid4().hex[:8]}"
    user = {"runAsNonRoot": True, "runAsUser": 2001, "runAsGroup": 2001}
    core.create_namespaced_pod(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "lab-test"}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "securityContext": {**user, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {
                        "name": "job",
                        "image": pinned,
                        "imagePullPolicy": "Always",
                        "command": ["/bin/sh", "-c", "echo pinned-ok"],
                        "securityContext": {
                            **user,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }
                ],
            },
        },
    )
    try:

        def finished() -> Any:
            pod = core.read_namespaced_pod(name, NAMESPACE)
            for cs in pod.status.container_statuses or []:
                if cs.state and cs.state.terminated:
                    return cs
            return None

        status = wait_for(f"pod {name} to finish", finished, DEADLINE_S)
        assert status.state.terminated.exit_code == 0
        assert status.image_id.endswith(pinned.rpartition("@")[2])
        assert core.read_namespaced_pod_log(name, NAMESPACE).strip() == "pinned-ok"
    finally:
        with contextlib.suppress(Exception):
            core.delete_namespaced_pod(name, NAMESPACE, grace_period_seconds=0)
