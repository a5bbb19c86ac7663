import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.runner.pod import RunPod
from shared.errors import PermanentError, TransientError

pytestmark = pytest.mark.unit

TLS = Path(__file__).parents[3] / "data" / "tls"
PODS = "/api/v1/namespaces/slurm-jobs/pods"
POD = f"{PODS}/job-7-r0"
RUNNING = {
    "metadata": {"name": "job-7-r0", "namespace": "slurm-jobs", "resourceVersion": "41"},
    "spec": {"containers": [{"name": "job", "image": "alpine"}]},
    "status": {
        "phase": "Running",
        "containerStatuses": [
            {
                "imageID": "alpine@sha256:abc",
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            }
        ],
    },
}


class FakeApi(ThreadingHTTPServer):
    """An API server for one Pod: answers, statuses to return, and what it was asked."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.pod: dict[str, Any] | None = RUNNING
        self.fail: list[tuple[int, dict[str, str]]] = []
        self.close_after_each = False
        self.seen: list[tuple[str, str, dict[str, list[str]], str]] = []
        self.log_lines = [b"2026-01-01T00:00:01.1Z one\n", b"2026-01-01T00:00:02.2Z two\n"]
        self.log_open = threading.Event()
        """Set: a followed log stays open after its lines, as for a running container."""
        self.events: list[dict[str, Any]] = []
        """What a watch sends, one event per line, before it ends."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        # Closed without saying so: the client finds out on its next request.
        self.close_connection = self.server.close_after_each
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        self.server.seen.append((method, url.path, query, self.headers["Authorization"]))
        if self.server.fail:
            status, headers = self.server.fail.pop(0)
            self._answer(status, b'{"message": "no"}', headers)
            return
        if url.path == POD + "/log":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for line in self.server.log_lines:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            while self.server.log_open.is_set() and query.get("follow") == ["true"]:
                self.server.log_open.wait(0.05)  # the client ends it
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
            return
        if url.path == PODS and query.get("watch") == ["true"]:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in self.server.events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True
            return
        if url.path != POD or self.server.pod is None:
            self._answer(404, b'{"reason": "NotFound"}')
            return
        if method == "DELETE":
            self.server.pod = None
            self._answer(200, json.dumps(RUNNING).encode())
            return
        self._answer(200, json.dumps(self.server.pod).encode())

    def do_GET(self) -> None:
        self._handle("GET")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@pytest.fixture
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "localhost.crt", TLS / "localhost.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def handoff(tmp_path: Path, server: str, ca: bytes | None = None) -> Path:
    """A kubeconfig as the launcher writes it (``services.launcher.k8s.kubeconfig_text``)."""
    cluster: dict[str, str] = {"server": server}
    ca = (TLS / "localhost.crt").read_bytes() if ca is None else ca
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path = tmp_path / "job-7-r0.kubeconfig"
    path.write_text(
        json.dumps(
            {
                "clusters": [{"name": "slurm-k8s", "cluster": cluster}],
                "users": [{"name": "job-7-r0", "user": {"token": "t0ken"}}],
            }
        )
    )
    return path


@pytest.fixture
def opened() -> Iterator[list[RunPod]]:
    pods: list[RunPod] = []
    yield pods
    for pod in pods:
        pod.close()


def run_pod(api: FakeApi, tmp_path: Path, opened: list[RunPod]) -> RunPod:
    pod = RunPod(handoff(tmp_path, f"https://127.0.0.1:{api.server_address[1]}"), "job-7-r0")
    opened.append(pod)
    return pod


def test_reads_the_pod_with_the_token_and_verifies_the_server(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    facts = run_pod(api, tmp_path, opened).read()
    assert facts is not None
    assert (facts.phase, facts.image_digest) == ("Running", "sha256:abc")
    assert facts.started_at == "2026-01-01T00:00:00+00:00"
    assert api.seen[0][1] == POD
    assert api.seen[0][3] == "Bearer t0ken"


def test_an_unknown_server_certificate_is_refused(api: FakeApi, tmp_path: Path) -> None:
    other_ca = b""  # the system's CAs only: the lab's self-signed server is not among them
    pod = RunPod(handoff(tmp_path, f"https://127.0.0.1:{api.server_address[1]}", other_ca), "p")
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        pod.read()


def test_delete_sends_the_grace_and_then_the_pod_is_gone(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    pod = run_pod(api, tmp_path, opened)
    pod.delete(10)
    assert (api.seen[0][0], api.seen[0][2]) == ("DELETE", {"gracePeriodSeconds": ["10"]})
    assert pod.read() is None
    pod.delete(10)  # gone already is fine


def test_statuses_map_to_the_taxonomy(api: FakeApi, tmp_path: Path, opened: list[RunPod]) -> None:
    pod = run_pod(api, tmp_path, opened)
    api.fail = [(503, {"Retry-After": "3"}), (403, {})]
    with pytest.raises(TransientError) as transient:
        pod.read()
    assert transient.value.delay == 3
    with pytest.raises(PermanentError, match="403"):
        pod.read()


def test_a_connection_the_server_closed_is_reopened(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    api.close_after_each = True
    pod = run_pod(api, tmp_path, opened)
    assert pod.read() is not None
    assert pod.read() is not None
    assert len(api.seen) == 2


ENDED = {
    **RUNNING,
    "metadata": {**RUNNING["metadata"], "resourceVersion": "42"},
    "status": {
        "phase": "Running",
        "containerStatuses": [{"state": {"terminated": {"exitCode": 3, "reason": "Error"}}}],
    },
}


def test_await_change_watches_this_pod_from_the_last_state_seen(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    pod = run_pod(api, tmp_path, opened)
    assert not pod.await_change(1), "nothing read yet: no version to watch from"
    assert pod.read() is not None
    api.events = [{"type": "MODIFIED", "object": ENDED}]
    assert pod.await_change(1)
    method, path, query, token = api.seen[-1]
    assert (method, path, token) == ("GET", PODS, "Bearer t0ken")
    assert query == {
        "watch": ["true"],
        "fieldSelector": ["metadata.name=job-7-r0"],
        "resourceVersion": ["41"],
        "timeoutSeconds": ["1"],
    }
    api.events = [{"type": "DELETED", "object": ENDED}]
    assert pod.await_change(1)
    assert api.seen[-1][2]["resourceVersion"] == ["42"]  # from the change the watch brought


@pytest.mark.parametrize(
    ("events", "changed"),
    [
        ([], False),  # the watch timed out without a change
        ([{"type": "ERROR", "object": {"kind": "Status", "code": 410}}], True),  # read again
    ],
)
def test_a_watch_without_a_change(
    api: FakeApi,
    tmp_path: Path,
    opened: list[RunPod],
    events: list[dict[str, Any]],
    changed: bool,
) -> None:
    pod = run_pod(api, tmp_path, opened)
    pod.read()
    api.events = events
    assert pod.await_change(1) is changed


def test_a_refused_watch_is_not_tried_again(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    pod = run_pod(api, tmp_path, opened)
    pod.read()
    api.fail = [(403, {})]
    assert not pod.await_change(1)
    assert not pod.watchable
    assert not pod.await_change(1)
    assert len(api.seen) == 2


def test_an_unreachable_server_is_transient(tmp_path: Path) -> None:
    pod = RunPod(handoff(tmp_path, "https://127.0.0.1:1"), "job-7-r0")
    with pytest.raises(TransientError, match="unreachable"):
        pod.read()
    with pytest.raises(TransientError, match="unreachable"):
        pod.open_log(True, None, None)


def test_the_log_streams_with_the_query_the_follower_asks_for(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    chunks = list(run_pod(api, tmp_path, opened).open_log(True, "2026-12-03T14:32:16Z", "Stderr"))
    assert b"".join(chunks) == b"".join(api.log_lines)
    method, path, query, _ = api.seen[0]
    assert (method, path) == ("GET", POD + "/log")
    assert query == {
        "container": ["job"],
        "follow": ["true"],
        "timestamps": ["true"],
        "sinceTime": ["2026-12-03T14:32:16Z"],
        "stream": ["Stderr"],
    }


def test_cut_follows_ends_a_follow_that_the_server_keeps_open(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    api.log_open.set()
    pod = run_pod(api, tmp_path, opened)
    got_all = threading.Event()
    ended: list[BaseException | None] = []

    def follow() -> None:
        got = b""
        try:
            for chunk in pod.open_log(True, None, None):
                got += chunk
                if got == b"".join(api.log_lines):
                    got_all.set()
            ended.append(None)
        except TransientError as exc:
            ended.append(exc)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert got_all.wait(10)
    assert reader.is_alive()  # the server keeps the stream open
    pod.cut_follows()
    reader.join(10)
    api.log_open.clear()
    assert not reader.is_alive()
    assert len(ended) == 1


def test_a_refused_log_read_raises_at_once(
    api: FakeApi, tmp_path: Path, opened: list[RunPod]
) -> None:
    api.fail = [(400, {})]
    with pytest.raises(PermanentError, match="400"):
        run_pod(api, tmp_path, opened).open_log(False, None, "Stdout")


@pytest.mark.parametrize(
    "text",
    ["", "not json", '{"clusters": []}', '{"clusters": [{"cluster": {"server": "http://x"}}], '
     '"users": [{"user": {"token": "t"}}]}'],
)  # fmt: skip
def test_an_unusable_handoff_is_permanent(tmp_path: Path, text: str) -> None:
    path = tmp_path / "h.kubeconfig"
    path.write_text(text)
    with pytest.raises(PermanentError, match="handoff kubeconfig"):
        RunPod(path, "job-7-r0")
