"""The project's error taxonomy: every library exception is translated into one of these.

Handlers raise these; the consumer adapter (``shared.broker.consumer``) is the only place that
turns them into ack, retry or dead-letter decisions. The original exception is always chained
(``raise ... from exc``) so logs keep the library's detail.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Root of everything the services raise on purpose."""


class PermanentError(ServiceError):
    """Retrying cannot help: the input or the request is wrong. The message is dead-lettered."""


class TransientError(ServiceError):
    """Retrying later may help (a dependency is down or busy).

    Args:
        message: what failed.
        delay: seconds to wait before the retry, if the failure suggests one (e.g. Retry-After).
    """

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class DecodeError(PermanentError):
    """A message body is not a valid envelope of a known type and version."""


class ConfigError(PermanentError):
    """The service's configuration is invalid; it should not start."""


class BrokerUnavailable(TransientError):
    """RabbitMQ cannot be reached or closed the connection."""


class PublishRejected(TransientError):
    """The broker nacked or returned a published message (unroutable or refused)."""


class KubeConflict(PermanentError):
    """The Kubernetes object already exists (HTTP 409): for a create, the earlier attempt won."""


class KubeNotFound(PermanentError):
    """The Kubernetes object does not exist (HTTP 404)."""


def kube_status_error(status: int, detail: str, retry_after: str | None = None) -> ServiceError:
    """The taxonomy's error for an HTTP status from the Kubernetes API (0: no answer).

    One mapping for the client library (``shared.kube.translate``) and the runner's
    standard-library calls (``services.runner.pod``), so both judge a status the same way.
    """
    if status == 409:
        return KubeConflict(detail)
    if status == 404:
        return KubeNotFound(detail)
    if status == 429 or status >= 500 or status == 0:
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        return TransientError(detail, delay=delay)
    return PermanentError(detail)
