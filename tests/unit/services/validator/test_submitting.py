import pytest

from services.validator.submitting import _match_key, error_lines, is_transient

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "stderr",
    [
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
        "(connect failure)",
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
        "sbatch: error: slurm_persist_conn_open_without_init: failed to open persistent "
        "connection to host:localhost:6819: Connection refused",
    ],
)
def test_controller_trouble_is_transient(stderr: str) -> None:
    assert is_transient(stderr)


@pytest.mark.parametrize(
    "stderr",
    [
        "sbatch: error: line 4: --uid is not allowed\n"
        "sbatch: error: Batch job submission failed: Unspecified error",
        "sbatch: error: Batch job submission failed: Invalid account or account/partition "
        "combination specified",
    ],
)
def test_refusals_are_permanent(stderr: str) -> None:
    assert not is_transient(stderr)


def test_error_lines_drop_the_prefix() -> None:
    assert error_lines("sbatch: error: line 4: bad\n\nsbatch: error: failed\n") == [
        "line 4: bad",
        "failed",
    ]


def test_keys_are_found_in_queue_and_accounting_listings() -> None:
    listing = "12|slurmk8s-key=aaa\n13_[1-9]|slurmk8s-key=bbb\n14_2|slurmk8s-key=ccc\n15|\n"
    assert _match_key(listing, "aaa") == 12
    assert _match_key(listing, "bbb") == 13
    assert _match_key(listing, "ccc") == 14
    assert _match_key(listing, "zzz") is None
