"""The runner's Kubernetes boundary: its own Pod only, through the launcher's handoff.

The credential is a token bound to the Pod, allowed (by the run's Role) to get, watch and
delete this one Pod and read its log; nothing else is reachable with it. Four calls (read
the Pod, watch it for its next change, delete it, read its log) are made with the standard
library's HTTP and TLS, not the kubernetes package: the runner exists once per running job,
and the client with its models costs about 35 MB of memory in each. Every call has a
timeout; HTTP statuses map to the project's errors through ``shared.errors.kube_status_error``
(the client's mapping too), and network failures are ``TransientError``.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from shared.errors import KubeNotFound, PermanentError, TransientError, kube_status_error
from shared.jobpods import JOB_NAMESPACE
from shared.podfacts import PodFacts, facts_of

CONTAINER = "job"
READ_TIMEOUT = (5.0, 15.0)
"""(connect, read) seconds for a Pod read or delete."""
LOG_TIMEOUT = (10.0, 300.0)
"""A silent job must not look like a dead connection forever: after 5 quiet minutes the log
read times out and the follower reconnects (deduplicated)."""
_CHUNK = 64 * 1024
_EVENT_LIMIT = 1024 * 1024
"""Longest watch event line read (a Pod's JSON is a few kilobytes)."""
_NETWORK = (OSError, http.client.HTTPException)
"""What a broken connection raises (socket.timeout and ssl.SSLError are OSErrors)."""


class _Connection(http.client.HTTPSConnection):
    """HTTPS that connects within ``timeout[0]``, then allows ``timeout[1]`` per read.

    Set in ``connect`` so a connection http.client reopens by itself gets the same limits.
    """

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, timeout: tuple[float, float]
    ) -> None:
        super().__init__(host, port, timeout=timeout[0], context=context)
        self._read_timeout = timeout[1]

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)


class Endpoint:
    """The API server, its CA and the bearer token, from a kubeconfig the launcher wrote.

    The launcher writes JSON (valid YAML, readable without a YAML library): one cluster with
    an https ``server`` and ``certificate-authority-data``, one user with ``token``.

    Raises:
        PermanentError: the file is not such a kubeconfig.
    """

    def __init__(self, kubeconfig: Path) -> None:
        try:
            doc = json.loads(kubeconfig.read_bytes())
            cluster = doc["clusters"][0]["cluster"]
            url = urlsplit(cluster["server"])
            self.token: str = doc["users"][0]["user"]["token"]
            ca = cluster.get("certificate-authority-data")
            self._context = ssl.create_default_context(
                cadata=base64.b64decode(ca).decode("ascii") if ca else None
            )
            port = url.port or 443
        except (OSError, ValueError, KeyError, IndexError, TypeError, ssl.SSLError) as exc:
            raise PermanentError(f"unusable handoff kubeconfig {kubeconfig}: {exc!r}") from exc
        if url.scheme != "https" or not url.hostname:
            raise PermanentError(f"handoff kubeconfig {kubeconfig}: not an https server")
        self._host, self._port = url.hostname, port
        self.prefix = url.path.rstrip("/")

    def connection(self, timeout: tuple[float, float]) -> http.client.HTTPSConnection:
        """A new connection (it connects on its first request)."""
        return _Connection(self._host, self._port, self._context, timeout)


class RunPod:
    """One Pod, through a Pod-bound kubeconfig.

    Reads and deletes (the runner's main thread) share one kept-alive connection; each log
    stream has its own (they run on follower threads).

    Args:
        kubeconfig: the handoff file.
        name: the Pod's name.
        namespace: the jobs namespace.

    Raises:
        PermanentError: the handoff file is unusable.
    """

    def __init__(self, kubeconfig: Path, name: str, namespace: str = JOB_NAMESPACE) -> None:
        self._endpoint = Endpoint(kubeconfig)
        self.name = name
        self.namespace = namespace
        self._pods = f"{self._endpoint.prefix}/api/v1/namespaces/{quote(namespace, safe='')}/pods"
        self._path = f"{self._pods}/{quote(name, safe='')}"
        self._version = ""
        """The resourceVersion of the last state read; a watch starts after it."""
        self.watchable = True
        """False once a watch was refused: the caller polls instead."""
        self._watches: set[http.client.HTTPSConnection] = set()
        self._conn = self._endpoint.connection(READ_TIMEOUT)
        self._lock = threading.Lock()
        self._streams: dict[http.client.HTTPSConnection, bool] = {}
        """Open log reads: whether each follows."""

    def read(self) -> PodFacts | None:
        """The Pod's facts, or None if it is gone."""
        try:
            doc = self._call("GET", self._path)
        except KubeNotFound:
            return None
        self._version = _version_of(doc)
        return facts_of(doc)

    def await_change(self, within_s: int) -> bool:
        """Whether the Pod changes (or goes) within ``within_s`` after the last state seen.

        A watch of this one Pod from the last read's resourceVersion (then from the last
        change it brought): the kubelet's report of the container's end reaches the runner
        when it reaches the API server, not at its next poll. A Role without ``watch``
        makes ``watchable`` False, and this returns False at once from then on.
        """
        if not self._version or not self.watchable:
            return False
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={self.name}",
            "resourceVersion": self._version,
            "timeoutSeconds": str(within_s),
        }
        connection = self._endpoint.connection((READ_TIMEOUT[0], within_s + READ_TIMEOUT[1]))
        with self._lock:
            self._watches.add(connection)
        try:
            response = self._send(connection, "GET", f"{self._pods}?{urlencode(query)}")
            if response.status == 403:
                self.watchable = False
                return False
            if not 200 <= response.status < 300:
                raise _status_error(response, response.read(4096))
            while line := response.readline(_EVENT_LIMIT):
                event = _event_of(line)
                kind, doc = event.get("type"), event.get("object")
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(doc, Mapping):
                    self._version = _version_of(doc) or self._version
                    return True
                if kind == "ERROR":
                    # 410: the version is too old to watch from; the caller reads the Pod.
                    return True
            return False
        except _NETWORK as exc:
            raise _unreachable(exc) from exc
        finally:
            with self._lock:
                self._watches.discard(connection)
            connection.close()

    def delete(self, grace_s: int) -> None:
        """Delete the Pod with a grace period; gone already is fine."""
        with suppress(KubeNotFound):
            self._call("DELETE", f"{self._path}?{urlencode({'gracePeriodSeconds': grace_s})}")

    def open_log(self, follow: bool, since_time: str | None, stream: str | None) -> Iterable[bytes]:
        """The container's log with timestamps, as chunks; ``stream`` Stdout/Stderr/None.

        ``since_time`` (RFC3339): only lines stamped then or later.
        """
        query: dict[str, Any] = {
            "container": CONTAINER,
            "follow": "true" if follow else "false",
            "timestamps": "true",
        }
        if since_time is not None:
            query["sinceTime"] = since_time
        if stream is not None:
            query["stream"] = stream
        connection = self._endpoint.connection(LOG_TIMEOUT)
        with self._lock:
            self._streams[connection] = follow
        try:
            response = self._send(connection, "GET", f"{self._path}/log?{urlencode(query)}")
            if not 200 <= response.status < 300:
                raise _status_error(response, response.read(4096))
        except _NETWORK as exc:
            self._closed(connection)
            raise _unreachable(exc) from exc
        except BaseException:
            self._closed(connection)
            raise
        return _chunks(response, lambda: self._closed(connection))

    def cut_follows(self) -> None:
        """End every open follow stream now (its reader sees the connection end).

        Once the container has ended, its log file is complete and one plain read gets the
        rest; a follow stream would end by itself only at the kubelet's next check, up to a
        second later. A plain read is never cut.
        """
        with self._lock:
            follows = [c for c, follow in self._streams.items() if follow]
        for connection in follows:
            if connection.sock is not None:
                with suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)

    def _closed(self, connection: http.client.HTTPSConnection) -> None:
        with self._lock:
            self._streams.pop(connection, None)
        connection.close()

    def close(self) -> None:
        """Close the kept-alive connection and end a watch (log streams close their own)."""
        with self._lock:
            self._conn.close()
            watches = list(self._watches)
        for connection in watches:
            if connection.sock is not None:
                with suppress(OSError):
                    connection.sock.shutdown(socket.SHUT_RDWR)

    def _call(self, method: str, path: str) -> Mapping[str, Any]:
        """One request on the kept-alive connection; the parsed JSON answer."""
        with self._lock:
            # The first request opens the connection; a later one may find that the server
            # closed it meanwhile and fail at once: both calls are idempotent, so one fresh
            # attempt is safe then.
            retry = self._conn.sock is not None
            while True:
                try:
                    response = self._send(self._conn, method, path)
                    body = response.read()
                    break
                except _NETWORK as exc:
                    self._conn.close()
                    if not retry:
                        raise _unreachable(exc) from exc
                    retry = False
        if not 200 <= response.status < 300:
            raise _status_error(response, body)
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise TransientError(f"Kubernetes API sent no JSON: {body[:200]!r}") from exc
        return doc if isinstance(doc, Mapping) else {}

    def _send(
        self, connection: http.client.HTTPSConnection, method: str, path: str
    ) -> http.client.HTTPResponse:
        connection.request(
            method,
            path,
            headers={
                "Authorization": f"Bearer {self._endpoint.token}",
                "Accept": "application/json",
                "User-Agent": "slurm-k8s-runner",
            },
        )
        return connection.getresponse()


def _version_of(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) else ""


def _event_of(line: bytes) -> Mapping[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise TransientError(
            f"Kubernetes API sent a watch event that is not JSON: {line[:200]!r}"
        ) from exc
    return event if isinstance(event, Mapping) else {}


def _unreachable(exc: BaseException) -> TransientError:
    return TransientError(f"Kubernetes API unreachable: {exc!r}")


class AccessRefused(PermanentError):
    """403: the API refused the run's token.

    A token bound to a deleted Pod is rejected with 401; a 403 for the run's own Pod means
    the authorizer has not seen the run's Role yet, as right after an API server restart
    (found by the chaos run): the runner retries it for a while before giving up.
    """


def _status_error(response: http.client.HTTPResponse, body: bytes) -> Exception:
    detail = body.decode("utf-8", errors="replace")[:500] or response.reason
    if response.status == 403:
        return AccessRefused(f"Kubernetes API 403 {response.reason}: {detail}")
    return kube_status_error(
        response.status,
        f"Kubernetes API {response.status} {response.reason}: {detail}",
        response.getheader("Retry-After"),
    )


def _chunks(response: http.client.HTTPResponse, closed: Callable[[], None]) -> Iterator[bytes]:
    """The body as it arrives (``read1``: what a chunk brought, without waiting for more)."""
    try:
        while chunk := response.read1(_CHUNK):
            yield chunk
    except _NETWORK as exc:
        raise _unreachable(exc) from exc
    finally:
        closed()
