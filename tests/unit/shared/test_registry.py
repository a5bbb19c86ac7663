import hashlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import PermanentError, TransientError
from shared.registry import (
    MANIFEST_TYPES,
    ImageAccessDenied,
    ImageNotFound,
    InvalidImageReference,
    Reference,
    RegistryProtocolError,
    RegistrySettings,
    RegistryUnavailable,
    manifest_url,
    parse_reference,
    resolve_digest,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "a" * 64
MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


# --- references ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "nas-hub.local:5407/alpine:latest",
            Reference("nas-hub.local:5407", "alpine", "latest", None),
        ),
        ("nas-hub.local:5407/alpine", Reference("nas-hub.local:5407", "alpine", "latest", None)),
        (
            "registry.example.com/team/x/train:v1.2",
            Reference("registry.example.com", "team/x/train", "v1.2", None),
        ),
        ("localhost:5000/a/b", Reference("localhost:5000", "a/b", "latest", None)),
        (
            f"nas-hub.local:5407/alpine@{DIGEST}",
            Reference("nas-hub.local:5407", "alpine", None, DIGEST),
        ),
        (
            f"nas-hub.local:5407/team/py:3@{DIGEST}",
            Reference("nas-hub.local:5407", "team/py", None, DIGEST),
        ),
        ("  reg.example.org/x:1 \n", Reference("reg.example.org", "x", "1", None)),
    ],
)
def test_parse_reference(image: str, expected: Reference) -> None:
    assert parse_reference(image) == expected


@pytest.mark.parametrize(
    "image",
    [
        "alpine:latest",  # no registry: the policy never guesses docker.io
        "library/alpine",
        "nas-hub.local:5407/Alpine:latest",  # upper case is not a repository name
        "nas-hub.local:5407/alpine@sha256:abc",
        "nas-hub.local:5407/alpine@md5:" + "a" * 32,
        "nas-hub.local:5407/",
        "",
    ],
)
def test_parse_reference_refuses(image: str) -> None:
    with pytest.raises(InvalidImageReference):
        parse_reference(image)


def test_invalid_reference_is_permanent_and_never_touches_the_network() -> None:
    with pytest.raises(PermanentError, match="does not name a registry"):
        resolve_digest("alpine", 0.001)


def test_manifest_url_scheme_per_registry() -> None:
    ref = parse_reference("nas-hub.local:5407/team/py:3")
    assert manifest_url(ref) == "http://nas-hub.local:5407/v2/team/py/manifests/3"
    assert manifest_url(ref, ()) == "https://nas-hub.local:5407/v2/team/py/manifests/3"
    pinned = parse_reference(f"reg.example.org/a@{DIGEST}")
    assert manifest_url(pinned) == f"https://reg.example.org/v2/a/manifests/{DIGEST}"


def test_reference_text_and_pinning() -> None:
    ref = parse_reference("nas-hub.local:5407/alpine")
    assert str(ref) == "nas-hub.local:5407/alpine:latest"
    assert ref.pinned(DIGEST) == f"nas-hub.local:5407/alpine@{DIGEST}"


def test_settings_plain_http_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RegistrySettings().plain_http_hosts == {"nas-hub.local:5407"}
    monkeypatch.setenv("REGISTRY_PLAIN_HTTP", " a.local:1, b.local ,")
    monkeypatch.setenv("REGISTRY_TIMEOUT", "2.5")
    settings = RegistrySettings()
    assert settings.plain_http_hosts == {"a.local:1", "b.local"}
    assert settings.timeout_s == 2.5
    monkeypatch.setenv("REGISTRY_PLAIN_HTTP", "")
    assert RegistrySettings().plain_http_hosts == frozenset()


# --- against a local registry stand-in ----------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = MANIFEST
    head_status: int | None = None  # None: same as status


@dataclass
class FakeRegistry:
    host: str
    answers: dict[str, Answer] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    hang: bool = False

    def image(self, rest: str) -> str:
        return f"{self.host}/{rest}"


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    state = FakeRegistry(host="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, head: bool) -> None:
            state.seen.append((self.command, self.path, self.headers.get("Accept", "")))
            if state.hang:
                state.release.wait(10)
                return
            answer = state.answers.get(self.path, Answer(status=404, body=b'{"errors":[]}'))
            status = answer.head_status if head and answer.head_status else answer.status
            self.send_response(status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if not head:
                self.wfile.write(answer.body)

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def _resolve(reg: FakeRegistry, rest: str, timeout_s: float = 5.0) -> str:
    return resolve_digest(reg.image(rest), timeout_s, plain_http={reg.host})


def test_head_with_digest_header(registry: FakeRegistry) -> None:
    registry.answers["/v2/team/py/manifests/3"] = Answer(headers={"Docker-Content-Digest": DIGEST})
    assert _resolve(registry, "team/py:3") == f"{registry.host}/team/py@{DIGEST}"
    assert [(m, p) for m, p, _ in registry.seen] == [("HEAD", "/v2/team/py/manifests/3")]
    accept = registry.seen[0][2]
    assert all(t in accept for t in MANIFEST_TYPES)


def test_default_tag_is_latest(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(
        headers={"Docker-Content-Digest": DIGEST}
    )
    assert _resolve(registry, "alpine") == f"{registry.host}/alpine@{DIGEST}"


def test_without_digest_header_the_body_is_hashed(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer()
    assert _resolve(registry, "alpine:latest") == f"{registry.host}/alpine@{MANIFEST_DIGEST}"
    assert [m for m, _, _ in registry.seen] == ["HEAD", "GET"]


def test_non_sha256_header_means_hash_the_body(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(
        headers={"Docker-Content-Digest": "sha512:" + "b" * 128}
    )
    assert _resolve(registry, "alpine") == f"{registry.host}/alpine@{MANIFEST_DIGEST}"


def test_head_not_allowed_falls_back_to_get(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(head_status=405)
    assert _resolve(registry, "alpine") == f"{registry.host}/alpine@{MANIFEST_DIGEST}"


def test_body_not_matching_its_digest_header_is_refused(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(
        head_status=405, headers={"Docker-Content-Digest": DIGEST}
    )
    with pytest.raises(RegistryProtocolError, match="labelled it"):
        _resolve(registry, "alpine")


def test_pinned_image_is_checked_and_kept(registry: FakeRegistry) -> None:
    registry.answers[f"/v2/alpine/manifests/{DIGEST}"] = Answer(
        headers={"Docker-Content-Digest": DIGEST}
    )
    assert _resolve(registry, f"alpine:old@{DIGEST}") == f"{registry.host}/alpine@{DIGEST}"
    assert registry.seen[0][1] == f"/v2/alpine/manifests/{DIGEST}"


def test_pinned_image_answered_with_another_digest_is_refused(registry: FakeRegistry) -> None:
    registry.answers[f"/v2/alpine/manifests/{DIGEST}"] = Answer()  # body hashes differently
    with pytest.raises(RegistryProtocolError, match="when asked for"):
        _resolve(registry, f"alpine@{DIGEST}")


def test_unknown_image_is_permanent_with_a_clear_message(registry: FakeRegistry) -> None:
    with pytest.raises(ImageNotFound) as info:
        _resolve(registry, "x:y")
    assert str(info.value) == f"image {registry.host}/x:y not found in the registry"
    assert isinstance(info.value, PermanentError)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_read_is_permanent(registry: FakeRegistry, status: int) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(status=status)
    with pytest.raises(ImageAccessDenied, match=f"HTTP {status}"):
        _resolve(registry, "alpine")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(registry: FakeRegistry, status: int) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(status=status)
    with pytest.raises(RegistryUnavailable, match=f"HTTP {status}") as info:
        _resolve(registry, "alpine")
    assert isinstance(info.value, TransientError)
    assert info.value.delay is None


def test_too_many_requests_is_transient_with_its_delay(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(
        status=429, headers={"Retry-After": "7"}
    )
    with pytest.raises(RegistryUnavailable) as info:
        _resolve(registry, "alpine")
    assert info.value.delay == 7.0


def test_other_client_errors_are_permanent(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(status=400)
    with pytest.raises(RegistryProtocolError, match="HTTP 400"):
        _resolve(registry, "alpine")


def test_oversize_manifest_is_refused(registry: FakeRegistry) -> None:
    registry.answers["/v2/alpine/manifests/latest"] = Answer(body=b" " * (4 * 1024 * 1024 + 1))
    with pytest.raises(RegistryProtocolError, match="more than"):
        _resolve(registry, "alpine")


def test_a_registry_that_does_not_answer_times_out(registry: FakeRegistry) -> None:
    registry.hang = True
    with pytest.raises(RegistryUnavailable, match="timed out"):
        _resolve(registry, "alpine", timeout_s=0.3)


def test_nothing_listening_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"127.0.0.1:{port}"
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        resolve_digest(f"{host}/alpine", 2.0, plain_http={host})


def test_https_to_a_plain_http_registry_is_transient_not_a_crash(
    registry: FakeRegistry,
) -> None:
    with pytest.raises(RegistryUnavailable):
        resolve_digest(registry.image("alpine"), 2.0, plain_http=())
