import pytest

from shared.broker.policy import Action, backoff_s, decide, poison
from shared.errors import DecodeError, PermanentError, TransientError

pytestmark = pytest.mark.unit


def test_success_acks() -> None:
    assert decide(None, 0, 3).action is Action.ACK


@pytest.mark.parametrize("error", [PermanentError("bad"), DecodeError("garbage")])
def test_permanent_errors_dead_letter_at_once(error: Exception) -> None:
    assert decide(error, 0, 3).action is Action.DEAD_LETTER


@pytest.mark.parametrize("error", [TransientError("down"), RuntimeError("bug?")])
def test_other_errors_retry_until_the_budget_is_spent(error: Exception) -> None:
    first = decide(error, 0, 3)
    assert (first.action, first.attempt) == (Action.RETRY, 1)
    assert decide(error, 2, 3).action is Action.RETRY
    assert decide(error, 3, 3).action is Action.DEAD_LETTER


def test_retry_after_hint_is_honoured() -> None:
    assert decide(TransientError("busy", delay=90), 0, 3).delay_s >= 90


def test_backoff_grows_and_is_capped() -> None:
    assert 0.5 <= backoff_s(1) <= 1
    assert 4 <= backoff_s(4) <= 8
    assert backoff_s(30) <= 120


def test_a_dead_letter_says_why_in_one_bounded_line() -> None:
    decision = decide(TransientError("slurmctld\nnot answering " + "x" * 900), 3, 3)
    assert decision.reason.startswith("still failing after 3 retries: TransientError: slurmctld")
    assert "\n" not in decision.reason
    assert len(decision.reason) < 560


def test_the_consumer_dead_letters_on_the_last_delivery_the_broker_allows() -> None:
    assert poison(0, 20) is None
    assert poison(18, 20) is None
    last = poison(19, 20)
    assert last is not None
    assert "delivered 20 times" in last.reason
