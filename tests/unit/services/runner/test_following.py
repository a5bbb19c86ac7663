import io
import random
import threading
from collections.abc import Iterable, Iterator

import pytest

from services.runner.following import Dedup, Follower, Output, fixed_width, parse_timestamp
from shared.errors import TransientError

pytestmark = pytest.mark.unit


def stamp(sec: int, ns: int = 1) -> bytes:
    return b"1970-01-01T00:00:%02d.%09dZ" % (sec, ns)


def line(sec: int, text: str, ns: int = 1) -> bytes:
    return stamp(sec, ns) + b" " + text.encode() + b"\n"


def sent(log: bytes, since: str | None) -> bytes:
    """What the API sends of ``log`` for ``sinceTime`` (whole seconds): lines stamped since."""
    if since is None:
        return log
    return b"".join(ln for ln in log.splitlines(keepends=True) if ln[:19].decode() >= since[:19])


def test_timestamps() -> None:
    assert parse_timestamp(b"1970-01-01T00:00:01.5Z") == (1, 500_000_000)
    assert parse_timestamp(b"1970-01-01T00:00:02Z") == (2, 0)
    assert parse_timestamp(b"hello") is None
    assert fixed_width(b"1970-01-01T00:00:01.5Z") == b"1970-01-01T00:00:01.500000000Z"
    assert fixed_width(b"1970-01-01T00:00:02Z") == b"1970-01-01T00:00:02.000000000Z"
    assert fixed_width(stamp(3)) == stamp(3)


def test_dedup_skips_what_a_reconnect_repeats() -> None:
    d = Dedup(margin_ns=10**9)
    assert d.keep([stamp(1), stamp(1), stamp(2), stamp(2)]) is None  # two lines share one
    assert d.since() == "1970-01-01T00:00:01Z"  # a second before the newest, whole seconds
    d.reconnected()
    # The API sends second 1 onwards again: the four lines written are dropped, a fifth
    # line at the newest instant is new.
    assert d.keep([stamp(1), stamp(1), stamp(2)]) == [False, False, False]
    assert d.keep([stamp(2), stamp(2), stamp(3)]) == [False, True, True]
    assert d.keep([stamp(3), stamp(4)]) is None  # the replay is over


def test_lines_stamped_out_of_order_are_kept_unless_written_before() -> None:
    # The runtime stamps stdout and stderr in two readers: a line written later can carry
    # an older stamp than one written before it. After a reconnect such a line is new even
    # though it is older than the newest line written.
    d = Dedup(margin_ns=10**9)
    assert d.keep([stamp(1, 5), stamp(1, 9), stamp(1, 7)]) is None
    d.reconnected()
    assert d.keep([stamp(1, 5), stamp(1, 9), stamp(1, 6), stamp(1, 7)]) == [
        False,
        False,
        True,  # never written: its stamp is older than the newest, it is still new
        False,
    ]
    assert d.keep([stamp(1, 8)]) is None  # every written stamp came again: the replay is over


def test_a_reconnect_keeps_only_the_margin_and_drops_older_lines_unseen() -> None:
    d = Dedup(margin_ns=10**9)
    d.keep([stamp(1, 5), stamp(3, 5)])
    d.keep([stamp(3, 6)])
    assert d.since() == "1970-01-01T00:00:02Z"
    d.reconnected()
    # Second 2 onwards comes again; a line older than 2.000000005 (newest - 1 s) was
    # written before the point where the connection stopped, kept stamps or not.
    assert d.keep([stamp(2, 1), stamp(3, 5), stamp(3, 6), stamp(3, 7)]) == [
        False,
        False,
        False,
        True,
    ]


def test_a_line_newer_than_all_written_ends_the_replay() -> None:
    # A last read of a rotated log does not repeat the lines of the file rotated away.
    d = Dedup()
    d.keep([stamp(1, 5), stamp(1, 6)])
    d.reconnected()
    assert d.keep([stamp(1, 6), stamp(1, 7), stamp(1, 5)]) == [False, True, True]


def follower(open_log: object, buf: io.BytesIO, ended: threading.Event) -> Follower:
    return Follower(open_log, Output(buf), ended, retry_s=0)  # type: ignore[arg-type]


def test_follower_reconnects_after_a_drop_without_duplicates() -> None:
    ended = threading.Event()
    buf = io.BytesIO()
    calls: list[tuple[bool, str | None]] = []
    full = [line(1, "a"), line(2, "b"), line(2, "c"), line(3, "d"), b"1970-01-01T00:00:04Z e"]

    def open_log(follow: bool, since: str | None) -> Iterable[bytes]:
        calls.append((follow, since))
        if len(calls) == 1:
            data = b"".join(full[:3])
            return [data[:20], data[20:]]
        if len(calls) == 2:
            raise TransientError("apiserver restarting")
        ended.set()
        return [sent(b"".join(full), since)]

    f = follower(open_log, buf, ended)
    f.run()
    assert buf.getvalue() == b"a\nb\nc\nd\ne"
    assert calls[0] == (True, None)
    assert calls[1] == (True, "1970-01-01T00:00:01Z")  # a second before the newest line
    assert f.errors == ["apiserver restarting"]
    assert f.complete


def test_a_line_cut_in_the_middle_arrives_whole_and_once() -> None:
    # A drop (or the runner's cut) mid-line: the stamped half must not be written, or the
    # replay would take the whole line for one already written.
    ended = threading.Event()
    buf = io.BytesIO()
    whole = line(1, "a") + line(2, "a long line")
    calls = 0

    def open_log(follow: bool, since: str | None) -> Iterable[bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return [whole[:-5]]
        ended.set()
        return [sent(whole, since)]

    f = follower(open_log, buf, ended)
    f.run()
    assert buf.getvalue() == b"a\na long line\n"


def test_a_big_output_is_copied_once_however_it_is_chunked_and_replayed() -> None:
    ended = threading.Event()
    buf = io.BytesIO()
    lines = [line(1 + i // 50_000, f"line {i}", ns=i % 50_000) for i in range(200_000)]
    log = b"".join(lines)
    chunks = [log[i : i + 65_536] for i in range(0, len(log), 65_536)]
    calls = 0

    def open_log(follow: bool, since: str | None) -> Iterator[bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:
            yield from chunks[: len(chunks) // 2]  # a drop half-way
            return
        ended.set()  # the container ended meanwhile; the last read repeats the last second
        again = sent(log, since)
        yield from (again[i : i + 65_536] for i in range(0, len(again), 65_536))

    f = follower(open_log, buf, ended)
    f.run()
    assert buf.getvalue() == b"".join(f"line {i}\n".encode() for i in range(200_000))
    assert f.complete


def test_the_containers_last_line_without_a_newline_is_kept() -> None:
    ended = threading.Event()
    ended.set()
    buf = io.BytesIO()
    follower(lambda follow, since: [line(1, "a"), stamp(2) + b" no newline"], buf, ended).run()
    assert buf.getvalue() == b"a\nno newline"


def test_a_last_read_that_fails_leaves_the_copy_incomplete() -> None:
    ended = threading.Event()
    ended.set()

    def open_log(follow: bool, since: str | None) -> Iterable[bytes]:
        raise TransientError("connection reset")

    f = follower(open_log, io.BytesIO(), ended)
    f.run()
    assert not f.complete
    assert f.errors == ["connection reset"]


def test_a_last_read_that_starts_after_the_last_line_written_is_incomplete() -> None:
    # The kubelet rotated the file after the last line written: the plain read of the
    # current file starts with lines never written, and those between are gone.
    ended = threading.Event()
    calls = 0

    def open_log(follow: bool, since: str | None) -> Iterable[bytes]:
        nonlocal calls
        calls += 1
        if calls == 1:
            ended.set()
            return [line(1, "a", ns=1), line(1, "b", ns=2)]
        return [line(1, "d", ns=500_000_000)]  # c went to the rotated file

    buf = io.BytesIO()
    f = follower(open_log, buf, ended)
    f.run()
    assert buf.getvalue() == b"a\nb\nd\n"
    assert not f.complete
    assert "rotated the log file away" in f.errors[-1]


def test_runner_lines_never_glue_onto_a_partial_log_line() -> None:
    buf = io.BytesIO()
    out = Output(buf)
    out.write(b"no newline")
    out.write(b"")
    out.line("[slurm-k8s] outcome: Succeeded exit=0")
    assert buf.getvalue() == b"no newline\n[slurm-k8s] outcome: Succeeded exit=0\n"


def test_follower_keeps_a_stderr_line_that_reaches_the_log_after_a_later_stdout_line() -> None:
    ended = threading.Event()
    buf = io.BytesIO()

    def open_log(follow: bool, since: str | None) -> Iterable[bytes]:
        ended.set()
        log = line(1, "Hello 1", ns=9_000_000) + line(1, "slurm-k8s: /bin/bash is not in the image")
        return [sent(log, since)]

    follower(open_log, buf, ended).run()
    assert buf.getvalue().count(b"not in the image") == 1
    assert b"Hello 1" in buf.getvalue()


@pytest.mark.parametrize("seed", range(20))
def test_interleaved_streams_cut_anywhere_arrive_whole_and_once(seed: int) -> None:
    # Two streams stamped by two readers and written in whichever order (a line can carry a
    # stamp up to 10 ms older than one written before it), some lines sharing a stamp; the
    # connection drops at random places, mid-line too, and the container ends meanwhile.
    rng = random.Random(seed)
    lines, clock = [], 1_000_000_000
    for n in range(3000):
        clock += rng.choice((0, 700, 20_000))
        skew = rng.choice((0, 0, 0, rng.randrange(10_000_000)))
        at = clock - skew
        lines.append(line(at // 10**9, f"{n}", ns=at % 10**9))
    log = b"".join(lines)
    cuts = sorted(rng.sample(range(len(log)), 4))
    calls = 0

    def open_log(follow: bool, since: str | None) -> Iterator[bytes]:
        nonlocal calls
        calls += 1
        if calls <= len(cuts):  # the log as far as it had grown, then the connection drops
            data = sent(log[: cuts[calls - 1]], since)
        else:
            ended.set()
            data = sent(log, since)
        step = rng.randrange(1, 5000)
        for i in range(0, len(data), step):
            yield data[i : i + step]

    ended = threading.Event()
    buf = io.BytesIO()
    follower(open_log, buf, ended).run()
    assert buf.getvalue() == b"".join(f"{n}\n".encode() for n in range(3000))
