"""Log lines queued for a writer thread (api/log_writer.py): all written, in order, and what is
queued at close is written before it returns."""

from __future__ import annotations

import io
import logging
import threading
import time

from api.log_writer import LineHandler, LineWriter


def test_lines_are_written_in_order_and_close_writes_what_is_left() -> None:
    out = io.StringIO()
    writer = LineWriter(out)
    for i in range(2000):
        writer.put(f"line {i}")
    writer.close()
    assert out.getvalue().splitlines() == [f"line {i}" for i in range(2000)]


def test_lines_from_several_threads_are_all_written() -> None:
    out = io.StringIO()
    writer = LineWriter(out)

    def put_many(prefix: str) -> None:
        for i in range(500):
            writer.put(f"{prefix}{i}")

    threads = [threading.Thread(target=put_many, args=(p,)) for p in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted(f"{p}{i}" for p in "abcd" for i in range(500))
    for p in "abcd":  # each thread's own lines keep their order
        assert [x for x in lines if x[0] == p] == [f"{p}{i}" for i in range(500)]


def test_a_line_is_written_soon_without_close() -> None:
    out = io.StringIO()
    writer = LineWriter(out)
    writer.put("first")
    deadline = time.monotonic() + 2
    while "first" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert out.getvalue() == "first\n"
    writer.put("second")
    writer.close()
    assert out.getvalue() == "first\nsecond\n"


def test_the_handler_writes_at_once_after_the_queued_lines() -> None:
    out = io.StringIO()
    writer = LineWriter(out)
    handler = LineHandler(writer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test_log_writer")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        writer.put("queued access line")
        logger.warning("disk %s", "full")
        # in the stream when the call returns, after the line queued before it
        assert out.getvalue() == "queued access line\nWARNING disk full\n"
    finally:
        logger.removeHandler(handler)
        writer.close()
