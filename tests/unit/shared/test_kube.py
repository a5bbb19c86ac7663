import pytest
from kubernetes.client.exceptions import ApiException

from shared.errors import PermanentError, TransientError
from shared.kube import KubeConflict, KubeNotFound, RateLimiter, api_call, translate

pytestmark = pytest.mark.unit


def _api_error(status: int, headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="reason")
    exc.headers = headers or {}
    exc.body = '{"message": "detail"}'
    return exc


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (409, KubeConflict),
        (404, KubeNotFound),
        (403, PermanentError),
        (422, PermanentError),
        (429, TransientError),
        (500, TransientError),
        (503, TransientError),
    ],
)
def test_status_codes_map_to_the_taxonomy(status: int, kind: type[Exception]) -> None:
    assert isinstance(translate(_api_error(status)), kind)


def test_retry_after_is_kept() -> None:
    error = translate(_api_error(429, {"Retry-After": "7"}))
    assert isinstance(error, TransientError)
    assert error.delay == 7


def test_connection_failures_are_transient() -> None:
    with pytest.raises(TransientError), api_call():
        raise ConnectionRefusedError("no apiserver")


def test_rate_limiter_allows_a_burst_without_waiting() -> None:
    limiter = RateLimiter(qps=1000, burst=5)
    for _ in range(5):
        limiter.acquire()
