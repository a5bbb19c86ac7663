"""The Kubernetes API boundary: client construction, rate limiting and error translation.

``kubernetes.client.ApiException`` never leaves this module's callers untranslated: use
``translate`` (or the ``api_call`` context manager) so the rest of the code speaks the project's
taxonomy. Conflict (409) means "already exists" and NotFound (404) means "already gone"; both
are normal outcomes for idempotent handlers, so they get their own exception types (defined in
``shared.errors``, where the runner's standard-library client finds them without this package).
Also the two Pod reads ``slurmk8s explain`` makes through the client (``read_pod``,
``pod_events``); what a Pod means is read by the pure ``shared.podfacts``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from shared.errors import KubeConflict as KubeConflict  # the taxonomy's, re-exported
from shared.errors import KubeNotFound as KubeNotFound
from shared.errors import TransientError, kube_status_error
from shared.podfacts import PodEvent, PodFacts, facts_of, iso_time

REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for the reads below."""


def translate(exc: ApiException | urllib3.exceptions.HTTPError | OSError) -> Exception:
    """Map a client exception to the taxonomy (the caller raises it ``from exc``)."""
    if not isinstance(exc, ApiException):
        return TransientError(f"Kubernetes API unreachable: {exc!r}")
    status = exc.status or 0
    detail = f"Kubernetes API {status} {exc.reason}: {_message(exc)}"
    return kube_status_error(status, detail, (exc.headers or {}).get("Retry-After"))


def _message(exc: ApiException) -> str:
    body = exc.body if isinstance(exc.body, str) else ""
    return body[:500] if body else str(exc.reason)


@contextmanager
def api_call() -> Iterator[None]:
    """Translate any Kubernetes client failure raised inside the block."""
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise translate(exc) from exc


class RateLimiter:
    """A token bucket: the Python client has none, and the API server's SLOs assume one.

    Args:
        qps: sustained requests per second.
        burst: requests allowed at once after an idle period.
    """

    def __init__(self, qps: float, burst: int) -> None:
        self._qps = qps
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Block until a request may be sent."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
            self._last = now
            if self._tokens < 1:
                time.sleep((1 - self._tokens) / self._qps)
                self._tokens = 1
                self._last = time.monotonic()
            self._tokens -= 1


def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """An API client from a kubeconfig file, or the in-cluster service account when None."""
    if kubeconfig is None:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    api: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return api


def read_pod(core: client.CoreV1Api, namespace: str, name: str) -> PodFacts | None:
    """The Pod's facts, or None if it does not exist.

    Raises:
        TransientError: the API is unreachable or overloaded.
        PermanentError: the API refused (e.g. RBAC).
    """
    try:
        with api_call():
            return facts_of(
                core.read_namespaced_pod(name, namespace, _request_timeout=REQUEST_TIMEOUT)
            )
    except KubeNotFound:
        return None


def pod_events(core: client.CoreV1Api, namespace: str, name: str) -> list[PodEvent]:
    """The Pod's events, oldest first (events outlive the Pod for about an hour)."""
    with api_call():
        listing = core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=Pod,involvedObject.name={name}",
            _request_timeout=REQUEST_TIMEOUT,
        )
    events = [
        PodEvent(
            at=iso_time(e.last_timestamp or e.event_time or e.first_timestamp),
            type=e.type or "",
            reason=e.reason or "",
            message=(e.message or "").strip(),
            count=e.count or 1,
        )
        for e in listing.items
    ]
    return sorted(events, key=lambda e: e.at)
