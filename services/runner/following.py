"""Following a container's log into the job's output: complete, in order, no line twice.

The log is read with ``follow=true&timestamps=true``. Every line starts with the kubelet's
timestamp in a fixed-width form (RFC3339 with all nine digits of nanoseconds, 30 bytes), so
stamps compare as bytes. A follow connection can drop (API server restart, kubelet hiccup,
idle proxies) while the container keeps running, and after the container's end one plain
read fetches the rest. Such a read asks for the log ``sinceTime`` the whole second of a
quarter second before the newest line written (the API keeps whole seconds; an absolute
time needs no clock of ours) and drops the lines it already wrote, by their stamps: ``Dedup``
keeps the stamps written in that quarter second. Stamps are not in order in the log:
the runtime stamps stdout and stderr lines in two readers and writes them in whichever order
it gets to (9 ms apart at 700,000 lines a second), and a line cut by a log rotation carries
the rotation's time on its first half; so "older than the newest" does not mean "written".
Byte counting (``limitBytes``) cannot resume from an offset, and ``tailLines`` cannot be
combined with a stream selection, so stamps are the one key.

Lines are handled a chunk at a time (one regular-expression split, one write): a plain read
of millions of short lines is copied about as fast as the API server sends it (265,000
lines a second on the lab), where a loop in Python over every line managed about 200,000.

Once the container has ended the runner cuts the follow stream and one plain read fetches
the rest: the kubelet flushes a follow stream line by line (26 s for 1.2 million lines where
a plain read of the same log took 4). A plain read sees only the current log file: when the
kubelet rotated the file past the last line written, the first line it sends is not one
written before (``Dedup.gap``) and the copy is not ``complete``; otherwise it is once that
read has ended normally.
"""

from __future__ import annotations

import calendar
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

from shared.errors import ServiceError

Timestamp = tuple[int, int]
"""(Unix seconds, nanoseconds) of a log line."""

OpenLog = Callable[[bool, str | None], Iterable[bytes]]
"""Opens the log: (follow, sinceTime as RFC3339) → chunks of bytes."""

_TS = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")
_STAMPED = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) ", re.MULTILINE)
"""A line's leading stamp; ``split`` gives [before, stamp, line, stamp, line, …]."""
_FIXED_LEN = 30
"""len(b"2026-12-03T14:32:16.000000001Z"): the kubelet's fixed-width form."""
_SECOND_LEN = 19
"""len(b"2026-12-03T14:32:16"): a stamp's whole second."""
MARGIN_NS = 250_000_000
"""How much older than the newest line written a line written after it may be stamped.

The runtime stamps a line when its reader takes it from the pipe and writes it once the
other stream's reader lets go of the file: 9 ms apart were seen at 700,000 lines a second,
and a line cut by a log rotation 8 ms. A quarter of a second is far beyond both; it costs
keeping that much of the newest stamps (30 bytes a line) and a reconnect repeating up to
1.25 s of the log (sinceTime has whole seconds)."""


def parse_timestamp(raw: bytes) -> Timestamp | None:
    """RFC3339(Nano) UTC as the kubelet writes it → (seconds, nanoseconds); None if not one."""
    match = _TS.match(raw)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    frac = (match.group(7) or b"").ljust(9, b"0")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds, int(frac)


def fixed_width(stamp: bytes) -> bytes:
    """A stamp in the fixed-width form, so that stamps compare as bytes.

    The kubelet writes that form; a shorter one (trailing zeros dropped) is widened.
    """
    if len(stamp) == _FIXED_LEN:
        return stamp
    whole, _, frac = stamp[:-1].partition(b".")
    return whole + b"." + frac.ljust(9, b"0") + b"Z"


def stamp_of(seconds: int, nanoseconds: int) -> bytes:
    """The fixed-width stamp of a time (UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode() + (
        b".%09dZ" % nanoseconds
    )


class Dedup:
    """Remembers what the output has, to drop what a reconnect sends again.

    It keeps the stamps of the lines written in the last ``margin_ns`` before the newest
    one (a chunk at a time, joined: 30 bytes a line). A line written after the point where
    a connection stopped is at most that much older than the newest line written before
    it, so a reconnect asks for the log from the second of (newest - margin) on, and of what
    it sends drops the lines older than (newest - margin) and those whose stamps are kept
    (using each up). Any other line is new, in whatever order it comes. The replay is over
    when every kept stamp is used up or a line newer than the newest written comes.
    """

    def __init__(self, margin_ns: int = MARGIN_NS) -> None:
        self._margin_ns = margin_ns
        self.last: bytes | None = None
        self._floor = b""
        """(newest - margin) as a stamp: older lines are all written."""
        self._recent: list[tuple[bytes, bytes]] = []
        """(newest stamp, stamps joined) of each chunk with a line since ``_floor``."""
        self._replay: Counter[bytes] | None = None
        self._unseen = 0
        self._first = False
        self.gap = False
        """A reconnect once began after lines never written: the log was rotated past them."""

    def since(self) -> str | None:
        """``sinceTime`` for a reconnect: the whole second of (newest written - margin)."""
        return None if self.last is None else self._floor[:_SECOND_LEN].decode() + "Z"

    def reconnected(self) -> None:
        """A new connection starts: the lines of ``since()`` onwards come again."""
        if self.last is None:
            return
        floor = self._floor
        stamps = (
            joined[i : i + _FIXED_LEN]
            for _, joined in self._recent
            for i in range(0, len(joined), _FIXED_LEN)
        )
        replay = Counter(stamp for stamp in stamps if stamp >= floor)
        self._unseen = sum(replay.values())
        self._replay = replay
        self._first = True

    def keep(self, stamps: Sequence[bytes]) -> list[bool] | None:
        """Which of these lines (in log order) are new: None when all are; records them."""
        mask = self._replayed(stamps) if self._replay is not None else None
        kept = stamps if mask is None else [s for s, new in zip(stamps, mask, strict=True) if new]
        if kept:
            self._record(kept)
        return mask

    def _replayed(self, stamps: Sequence[bytes]) -> list[bool]:
        replay, last, floor = self._replay, self.last, self._floor
        # set together by reconnected()
        assert replay is not None
        assert last is not None
        if self._first and stamps:
            # The newest line written is in the file unless it was rotated away since: then
            # the first line sent is one written before, else the lines between are lost.
            self._first = False
            self.gap = self.gap or (stamps[0] >= floor and replay[stamps[0]] == 0)
        mask: list[bool] = []
        for index, stamp in enumerate(stamps):
            if stamp > last or self._unseen == 0:
                self._replay = None
                return mask + [True] * (len(stamps) - index)
            if stamp < floor:
                mask.append(False)
            elif replay[stamp] > 0:
                replay[stamp] -= 1
                self._unseen -= 1
                mask.append(False)
            else:
                mask.append(True)
        if self._unseen == 0:
            self._replay = None
        return mask

    def _record(self, stamps: Sequence[bytes]) -> None:
        newest = max(stamps)
        if self.last is None or newest > self.last:
            self.last = newest
            at = parse_timestamp(newest)
            if at is not None:
                floor = stamp_of(*divmod(at[0] * 10**9 + at[1] - self._margin_ns, 10**9))
                if floor[:_SECOND_LEN] != self._floor[:_SECOND_LEN]:
                    self._recent = [entry for entry in self._recent if entry[0] >= floor]
                self._floor = floor
        self._recent.append((newest, b"".join(stamps)))


class Output:
    """The job's output stream, shared by the follower and the runner's own lines."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._partial = False
        self.lost: str | None = None
        """Why the output could not be written (e.g. the NAS is full), or None."""

    def write(self, data: bytes) -> None:
        """Write log bytes as they come (``tail -f`` sees them at once)."""
        if not data:
            return
        with self._lock:
            self._put(data)
            self._partial = not data.endswith(b"\n")

    def line(self, text: str) -> None:
        """One line of the runner's own, always on a line of its own."""
        with self._lock:
            prefix = b"\n" if self._partial else b""
            self._put(prefix + text.encode() + b"\n")
            self._partial = False

    def _put(self, data: bytes) -> None:
        # A write that fails once (ENOSPC, EIO, a NAS gone) is not retried: what follows would
        # land after a hole, and the log's copy must not treat it as a broken connection and
        # fetch the log again. The runner fails the job with ``lost`` as the reason.
        if self.lost is not None:
            return
        try:
            self._stream.write(data)
            self._stream.flush()
        except OSError as exc:
            self.lost = exc.strerror or str(exc)


class Follower:
    """Copies one log stream (All, Stdout or Stderr) into an ``Output`` until told to stop.

    Args:
        open_log: opens the log stream.
        out: where the lines go.
        ended: set by the runner once the container has ended.
        retry_s: pause before reconnecting.
        on_stream_end: called when a follow stream ends (the container probably stopped).
    """

    def __init__(
        self,
        open_log: OpenLog,
        out: Output,
        ended: threading.Event,
        retry_s: float = 1.0,
        on_stream_end: Callable[[], None] | None = None,
    ) -> None:
        self._open = open_log
        self._out = out
        self._ended = ended
        self._retry_s = retry_s
        self._on_stream_end = on_stream_end
        self.dedup = Dedup()
        self.errors: list[str] = []
        self.complete = False
        """True once the last read after the container's end went through."""
        self.done = threading.Event()

    def _copy(self, chunks: Iterable[bytes], *, final: bool) -> None:
        pending = b""
        for chunk in chunks:
            pending += chunk
            end = pending.rfind(b"\n") + 1
            if end:
                self._out.write(self._new_lines(pending[:end]))
                pending = pending[end:]
        # A line without its newline at the end of a follow stream that dropped while the
        # container runs may be cut short: the next read brings it whole. Once the container
        # has ended it is what the log file ends with (its last output without a newline, or
        # the first half of a line a log rotation cut, whose other half the file rotated
        # away may never bring).
        if pending and (final or self._ended.is_set()):
            self._out.write(self._new_lines(pending))

    def _new_lines(self, block: bytes) -> bytes:
        """The lines of ``block`` not written before, without their stamps."""
        parts = _STAMPED.split(block)
        stamps, lines = parts[1::2], parts[2::2]
        if len(b"".join(stamps)) != _FIXED_LEN * len(stamps):
            stamps = [fixed_width(stamp) for stamp in stamps]
        mask = self.dedup.keep(stamps)
        if mask is not None:
            lines = [line for line, new in zip(lines, mask, strict=True) if new]
        # parts[0]: text before the first stamp (should not happen), kept whole.
        return parts[0] + b"".join(lines)

    def run(self) -> None:
        """Follow until the container has ended and its log is fully copied."""
        try:
            first = True
            while True:
                final = self._ended.is_set()
                if not first:
                    self.dedup.reconnected()
                first = False
                try:
                    self._copy(self._open(not final, self.dedup.since()), final=final)
                except (ServiceError, OSError) as exc:
                    if final:
                        self.errors.append(str(exc))
                        return
                    if not self._ended.is_set():  # else the stream was cut on purpose
                        self.errors.append(str(exc))
                    self._ended.wait(self._retry_s)
                    continue
                if final:
                    if self.dedup.gap:
                        self.errors.append(
                            "the kubelet rotated the log file away before it was read (the "
                            "node's containerLogMaxSize is below what the job printed)"
                        )
                    self.complete = not self.dedup.gap
                    return
                # A follow stream ends when the container does (or the connection drops):
                # tell the runner to look at the Pod now rather than at its next poll.
                if self._on_stream_end is not None:
                    self._on_stream_end()
                self._ended.wait(timeout=0 if self._ended.is_set() else self._retry_s)
        finally:
            self.done.set()
