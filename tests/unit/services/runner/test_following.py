import io
import threading
from collections.abc import Iterable

import pytest

from services.runner.following import Dedup, Follower, Output, parse_timestamp
from shared.errors import TransientError

pytestmark = pytest.mark.unit


def test_timestamps() -> None:
    assert parse_timestamp(b"1970-01-01T00:00:01.5Z") == (1, 500_000_000)
    assert parse_timestamp(b"1970-01-01T00:00:02Z") == (2, 0)
    assert parse_timestamp(b"hello") is None


def test_dedup_skips_what_a_reconnect_repeats() -> None:
    d = Dedup()
    assert [d.accept((1, 0)), d.accept((1, 0)), d.accept((2, 0))] == [True, True, True]
    d.accept((2, 0))  # two lines share the last timestamp
    d.reconnected()
    assert [d.accept((1, 0)), d.accept((2, 0)), d.accept((2, 0))] == [False, False, False]
    assert d.accept((2, 0)) is True  # a third line at that instant is new
    assert d.accept((3, 0)) is True


def line(sec: int, text: str) -> bytes:
    return f"1970-01-01T00:00:{sec:02d}.000000001Z {text}\n".encode()


def test_follower_reconnects_after_a_drop_without_duplicates() -> None:
    ended = threading.Event()
    buf = io.BytesIO()
    calls: list[tuple[bool, int | None]] = []
    full = [line(1, "a"), line(2, "b"), line(2, "c"), line(3, "d"), b"1970-01-01T00:00:04Z e"]

    def open_log(follow: bool, since: int | None) -> Iterable[bytes]:
        calls.append((follow, since))
        if len(calls) == 1:
            # drops mid-way, in the middle of a line
            data = b"".join(full[:3])
            return [data[:20], data[20:]]
        if len(calls) == 2:
            raise TransientError("apiserver restarting")
        ended.set()
        return [b"".join(full[1:])]

    follower = Follower(open_log, Output(buf), ended, clock=lambda: 10.0, retry_s=0)
    follower.run()
    assert buf.getvalue() == b"a\nb\nc\nd\ne"
    assert calls[0] == (True, None)
    since = calls[1][1]
    assert since is not None
    assert since >= 8  # reaches back before the last line
    assert follower.errors == ["apiserver restarting"]


def test_runner_lines_never_glue_onto_a_partial_log_line() -> None:
    buf = io.BytesIO()
    out = Output(buf)
    out.write(b"no newline")
    out.line("[slurm-k8s] outcome: Succeeded exit=0")
    assert buf.getvalue() == b"no newline\n[slurm-k8s] outcome: Succeeded exit=0\n"


def test_lines_stamped_out_of_order_within_one_connection_are_all_kept() -> None:
    # The runtime stamps stdout and stderr in two readers: a stderr line written first can
    # carry a later stamp than the stdout line after it, or the other way round.
    d = Dedup()
    assert [d.accept((2, 0)), d.accept((1, 0)), d.accept((3, 0))] == [True, True, True]
    d.reconnected()
    assert [d.accept((1, 0)), d.accept((2, 0)), d.accept((3, 0))] == [False, False, False]
    assert d.accept((4, 0)) is True
    assert d.accept((3, 5)) is True  # out of order again, after the replay ended


def test_follower_keeps_a_stderr_line_that_reaches_the_log_after_a_later_stdout_line() -> None:
    ended = threading.Event()
    buf = io.BytesIO()

    def open_log(follow: bool, since: int | None) -> Iterable[bytes]:
        ended.set()
        return [line(2, "Hello 1"), line(1, "slurm-k8s: /bin/bash is not in the image")]

    Follower(open_log, Output(buf), ended, clock=lambda: 10.0, retry_s=0).run()
    assert buf.getvalue().count(b"not in the image") == 1
    assert b"Hello 1" in buf.getvalue()
