import pytest

from shared.jobtrace import traceparent_in, valid_traceparent, with_traceparent

pytestmark = pytest.mark.unit

GOOD = f"00-{'4b' * 16}-{'00f0' * 4}-01"


def test_a_comment_carries_a_valid_context_after_the_key() -> None:
    comment = with_traceparent("slurmk8s-key=abc", GOOD)
    assert comment == f"slurmk8s-key=abc; traceparent={GOOD}"
    assert traceparent_in(comment) == GOOD
    assert traceparent_in(f"{comment}; reason=OOMKilled") == GOOD


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "01-" + GOOD[3:],  # another version
        GOOD.upper(),
        f"00-{'0' * 32}-{'00f0' * 4}-01",
        f"00-{'4b' * 16}-{'0' * 16}-01",
        GOOD + "0",
        GOOD + "\n",
        " " + GOOD,
    ],
)
def test_anything_else_is_not_carried(value: str | None) -> None:
    assert with_traceparent("slurmk8s-key=abc", value) == "slurmk8s-key=abc"
    if value is not None:
        assert not valid_traceparent(value)


def test_a_hostile_comment_yields_nothing() -> None:
    assert traceparent_in(None) is None
    assert traceparent_in("slurmk8s-key=abc") is None
    assert traceparent_in(f"traceparent={GOOD}x; traceparent=zz") is None
    assert traceparent_in(f"traceparent={GOOD}; " + "x" * 2000) is None
