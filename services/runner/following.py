"""Following a container's log into the job's output: complete, in order, no line twice.

The log is read with ``follow=true&timestamps=true``. A follow connection can drop (API
server restart, kubelet hiccup, idle proxies) while the container keeps running; then the
follower reconnects with ``sinceSeconds`` reaching a little before the last line it wrote
(this client has no ``sinceTime``; a few seconds of overlap absorb clock differences) and
drops what it already wrote: every line carries the kubelet's nanosecond timestamp, lines
older than the newest one written are skipped, and of the lines sharing that timestamp
exactly as many as were written are skipped; the first newer line ends the replay. Byte
counting (``limitBytes``) cannot resume from an offset, and ``tailLines`` cannot be combined
with a stream selection, so timestamps are the one reliable key.

When the container ends the kubelet closes the stream after the last line; one last
non-following read then fills any gap a drop at that very moment left.
"""

from __future__ import annotations

import calendar
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO

from shared.errors import ServiceError

Timestamp = tuple[int, int]
"""(Unix seconds, nanoseconds) of a log line."""

OpenLog = Callable[[bool, int | None], Iterable[bytes]]
"""Opens the log: (follow, since_seconds) → chunks of bytes."""

_TS = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z$")
OVERLAP_S = 5


def parse_timestamp(raw: bytes) -> Timestamp | None:
    """RFC3339(Nano) UTC as the kubelet writes it → (seconds, nanoseconds); None if not one."""
    match = _TS.match(raw)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    frac = (match.group(7) or b"").ljust(9, b"0")
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return seconds, int(frac)


class Dedup:
    """Remembers how far the output got, to drop what a reconnect sends again.

    Only a replay is filtered. Within one connection every line is new even when its
    timestamp is older than the one before: the runtime stamps stdout and stderr lines in
    two readers and writes them in whichever order it gets to, so a stderr line can reach the
    log after a later-stamped stdout line (a job's first stderr line was lost that way).
    """

    def __init__(self) -> None:
        self.last: Timestamp | None = None
        self._at_last = 0
        self._skip_at_last = 0
        self._replaying = False

    def reconnected(self) -> None:
        """A new connection starts: lines up to the newest one written come again."""
        self._replaying = self.last is not None
        self._skip_at_last = self._at_last

    def accept(self, ts: Timestamp | None) -> bool:
        """Whether a line with this timestamp is new (lines without one are always new)."""
        if ts is None:
            return True
        if self._replaying and self.last is not None:
            if ts < self.last:
                return False
            if ts == self.last and self._skip_at_last > 0:
                self._skip_at_last -= 1
                return False
            self._replaying = False
        if self.last is None or ts > self.last:
            self.last, self._at_last = ts, 1
        elif ts == self.last:
            self._at_last += 1
        return True


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
        clock: wall clock (seconds), for ``sinceSeconds``.
        retry_s: pause before reconnecting.
        on_stream_end: called when a follow stream ends (the container probably stopped).
    """

    def __init__(
        self,
        open_log: OpenLog,
        out: Output,
        ended: threading.Event,
        clock: Callable[[], float] = time.time,
        retry_s: float = 1.0,
        on_stream_end: Callable[[], None] | None = None,
    ) -> None:
        self._open = open_log
        self._out = out
        self._ended = ended
        self._clock = clock
        self._retry_s = retry_s
        self._on_stream_end = on_stream_end
        self.dedup = Dedup()
        self.errors: list[str] = []
        self.done = threading.Event()

    def _since(self) -> int | None:
        if self.dedup.last is None:
            return None
        return max(1, math.ceil(self._clock() - self.dedup.last[0]) + OVERLAP_S)

    def _copy(self, chunks: Iterable[bytes]) -> None:
        pending = b""
        for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._emit(line + b"\n")
        if pending:
            self._emit(pending)

    def _emit(self, raw: bytes) -> None:
        stamp, sep, rest = raw.partition(b" ")
        ts = parse_timestamp(stamp) if sep else None
        if ts is None:
            # Not a timestamped line (should not happen): keep it whole.
            self._out.write(raw)
            return
        if self.dedup.accept(ts):
            self._out.write(rest)

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
                    self._copy(self._open(not final, self._since()))
                except (ServiceError, OSError) as exc:
                    if final:
                        self.errors.append(str(exc))
                        return
                    if not self._ended.is_set():  # else the stream was cut on purpose
                        self.errors.append(str(exc))
                    self._ended.wait(self._retry_s)
                    continue
                if final:
                    return
                # A follow stream ends when the container does (or the connection drops):
                # tell the runner to look at the Pod now rather than at its next poll.
                if self._on_stream_end is not None:
                    self._on_stream_end()
                if not self._ended.wait(timeout=0 if self._ended.is_set() else self._retry_s):
                    continue
        finally:
            self.done.set()
