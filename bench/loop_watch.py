"""`asgi:app` (or, with `BENCH_WATCH_FROZEN=1`, `bench.gc_frozen:app`) with two recorders, for
finding what holds an instance's event loop (`bench push --watch-loop`); nothing of the served
app changes.

- Every cyclic collection is timed through `gc.callbacks`: one line per collection of the older
  generations, and per young one of `BENCH_WATCH_GC_MS` (default 1) or more, with its generation
  and what it collected; a count and total per generation at shutdown. With
  `BENCH_WATCH_YOUNG=1`, each young collection's line also says how many objects it walked, of
  which types (that census itself holds the loop for a few ms per 10,000 young objects).
- A task wakes every 2 ms and notes when it ran; a thread checks that note every millisecond,
  and while the loop has not come back for 4 ms it samples the main thread's stack. When the
  task wakes `BENCH_WATCH_LAG_MS` (default 5) late, the stall is logged with how much of it the
  collector took and the distinct stacks sampled inside it (the innermost frames first).

Lines go to stderr (the server's log) as `watch {json}`, with wall-clock times to set beside the
benchmark's commit times. The thread's samples need the GIL, so a stall inside one C call (a
collection) shows up as collector time rather than as a stack.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
if os.environ.get("BENCH_WATCH_FROZEN") == "1":
    from bench.gc_frozen import app as _app
else:
    import asgi

    _app = asgi.create_app()

GC_MS = float(os.environ.get("BENCH_WATCH_GC_MS", "1"))
LAG_MS = float(os.environ.get("BENCH_WATCH_LAG_MS", "5"))
CENSUS = os.environ.get("BENCH_WATCH_YOUNG") == "1"  # costs a walk of the young objects
TICK_S = 0.002
FRAMES = 14


def _emit(kind: str, **fields: Any) -> None:
    sys.stderr.write("watch " + json.dumps({"kind": kind, "at": time.time(), **fields}) + "\n")
    sys.stderr.flush()


class _Collector:
    def __init__(self) -> None:
        self.started = 0.0
        self.young: dict[str, Any] = {}
        self.total_s = 0.0  # every collection's time so far, read by the lag task
        self.per_gen: dict[int, list[float]] = {
            0: [0, 0.0, 0.0],
            1: [0, 0.0, 0.0],
            2: [0, 0.0, 0.0],
        }

    @staticmethod
    def _young() -> dict[str, Any]:
        """What a young collection is about to walk: how many objects, of which types, and the
        largest container among them (a collection visits every reference of each)."""
        young = gc.get_objects(0)
        types: dict[str, int] = {}
        largest = (0, "")
        for obj in young:
            name = type(obj).__name__
            types[name] = types.get(name, 0) + 1
            if isinstance(obj, (list, dict, set, tuple)) and len(obj) > largest[0]:
                largest = (len(obj), name)
        top = sorted(types.items(), key=lambda kv: -kv[1])[:6]
        return {"young": len(young), "young_types": top, "largest": largest}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if CENSUS and info["generation"] == 0:
                self.young = self._young()
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        self.total_s += took
        gen = info["generation"]
        stats = self.per_gen[gen]
        stats[0] += 1
        stats[1] += took
        stats[2] = max(stats[2], took)
        if gen > 0 or took * 1000 >= GC_MS:
            _emit(
                "gc",
                gen=gen,
                ms=round(took * 1000, 2),
                collected=info["collected"],
                counts=gc.get_count(),
                **(self.young if gen == 0 else {}),
            )


class _Watch:
    def __init__(self, collector: _Collector) -> None:
        self.collector = collector
        self.beat = time.perf_counter()
        self.samples: list[str] = []
        self.main = threading.main_thread().ident
        self.running = True

    async def ticks(self) -> None:
        while True:
            before, gc_before = time.perf_counter(), self.collector.total_s
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            self.beat = now
            late_ms = (now - before - TICK_S) * 1000
            if late_ms >= LAG_MS:
                stacks: dict[str, int] = {}
                for s in self.samples:
                    stacks[s] = stacks.get(s, 0) + 1
                _emit(
                    "lag",
                    ms=round(late_ms, 2),
                    gc_ms=round((self.collector.total_s - gc_before) * 1000, 2),
                    stacks=[{"n": n, "frames": s.split("|")} for s, n in stacks.items()],
                )
            self.samples = []

    def sampler(self) -> None:
        while self.running:
            time.sleep(0.001)
            if time.perf_counter() - self.beat < 0.004 or self.main is None:
                continue
            frame = sys._current_frames().get(self.main)
            if frame is None:
                continue
            frames = traceback.extract_stack(frame)[-FRAMES:]
            self.samples.append(
                "|".join(
                    f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno} {f.name}"
                    for f in reversed(frames)
                )
            )


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "lifespan":
        await _app(scope, receive, send)
        return
    collector = _Collector()
    watch = _Watch(collector)
    tasks: list[asyncio.Task[None]] = []

    async def send_watched(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            gc.callbacks.append(collector)
            tasks.append(asyncio.get_running_loop().create_task(watch.ticks()))
            threading.Thread(target=watch.sampler, daemon=True).start()
        elif message["type"].startswith("lifespan.shutdown"):
            watch.running = False
            for task in tasks:
                task.cancel()
            _emit(
                "gc_summary",
                per_gen={
                    g: {
                        "n": s[0],
                        "total_ms": round(s[1] * 1000, 1),
                        "max_ms": round(s[2] * 1000, 2),
                    }
                    for g, s in collector.per_gen.items()
                },
            )
        await send(message)

    await _app(scope, receive, send_watched)
