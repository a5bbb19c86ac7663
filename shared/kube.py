"""The Kubernetes API boundary: client construction, rate limiting and error translation.

``kubernetes.client.ApiException`` never leaves this module's callers untranslated: use
``translate`` (or the ``api_call`` context manager) so the rest of the code speaks the project's
taxonomy. Conflict (409) means "already exists" and NotFound (404) means "already gone"; both
are normal outcomes for idempotent handlers, so they get their own exception types.
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

from shared.errors import PermanentError, TransientError


class KubeConflict(PermanentError):
    """The object already exists (HTTP 409): for a create, the earlier attempt succeeded."""


class KubeNotFound(PermanentError):
    """The object does not exist (HTTP 404)."""


def translate(exc: ApiException | urllib3.exceptions.HTTPError | OSError) -> Exception:
    """Map a client exception to the taxonomy (the caller raises it ``from exc``)."""
    if not isinstance(exc, ApiException):
        return TransientError(f"Kubernetes API unreachable: {exc!r}")
    status = exc.status or 0
    detail = f"Kubernetes API {status} {exc.reason}: {_message(exc)}"
    if status == 409:
        return KubeConflict(detail)
    if status == 404:
        return KubeNotFound(detail)
    if status == 429 or status >= 500 or status == 0:
        retry_after = (exc.headers or {}).get("Retry-After")
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        return TransientError(detail, delay=delay)
    return PermanentError(detail)


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
