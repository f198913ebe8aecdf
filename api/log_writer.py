"""Log lines written off the event loop: a thread takes finished lines from a queue and writes
whatever has gathered in one `write` and one flush.

Under load a server logs a line per request (the access line); written by the request itself,
each line is a system call on the event loop. Queued (`put`), the event loop only appends a
string; the writer thread wakes at the first line, lets the lines of the next few milliseconds
gather, and writes them together (at most ~1/GATHER_S wake-ups a second however many requests
arrive). Every other line is written at once (`write_now`, after the queued ones, in order), as
a stream handler would: a warning is in the log when the call that logged it returns."""

from __future__ import annotations

import atexit
import collections
import logging
import sys
import threading
import time
from typing import IO

# how long the writer lets lines gather after the first: what a line may lag behind its event
GATHER_S = 0.01


class LineWriter:
    """A daemon thread writing queued lines to `stream` (default: stderr, looked up at each
    write). `close` writes what is left.

    `put` appends to a deque (atomic, no lock) and wakes the writer only when it is not already
    woken: one wake-up per batch, not per line."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lines: collections.deque[str] = collections.deque()
        self._woken = False
        self._wake = threading.Event()
        self._closing = False
        self._writing = threading.RLock()  # one batch at a time, in the order lines arrived
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def put(self, line: str) -> None:
        self._lines.append(line)
        if not self._woken:
            self._woken = True
            self._wake.set()

    def write_now(self, line: str) -> None:
        """Write the queued lines and then `line`, before returning."""
        with self._writing:
            self._write([*self._take(), line])

    def close(self) -> None:
        if self._thread.is_alive():
            self._closing = True
            self._wake.set()
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if not self._closing:
                time.sleep(GATHER_S)
            # cleared before taking the lines: a line put from now on wakes the next round
            self._wake.clear()
            self._woken = False
            with self._writing:
                batch = self._take()
                if batch:
                    self._write(batch)
            if self._closing:
                return

    def _take(self) -> list[str]:
        batch: list[str] = []
        try:
            while True:
                batch.append(self._lines.popleft())
        except IndexError:
            return batch

    def _write(self, batch: list[str]) -> None:
        stream = self._stream or sys.stderr
        try:
            stream.write("\n".join(batch) + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing else to tell
            pass


class LineHandler(logging.Handler):
    """A logging handler writing through a `LineWriter`, at once and after the lines queued
    before (the access lines, which api/observability.py queues itself)."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.write_now(self.format(record))
        except Exception:
            self.handleError(record)
