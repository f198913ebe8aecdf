"""Background tasks that must not die quietly: the Redis listener and publisher, the hub's
periodic journal check and the sweeper.

Each loops in rounds. An error in a round is logged, counted
(`creditstream_background_task_errors_total{task}`) and the round is retried after a backoff;
nothing but cancellation ends the loop. Each round also beats a `Heartbeat`, and readiness
(`/readyz`, check `background_tasks`) answers 503 while a task is dead (its asyncio task ended)
or stuck (no beat for longer than its limit), so a load balancer stops sending it streams.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import metrics

log = logging.getLogger("creditstream.background")


class BackgroundTaskDown(RuntimeError):
    """A supervised background task has ended or stopped making progress."""


class Backoff:
    """Exponential backoff with jitter between `first_s` and `cap_s`."""

    def __init__(self, first_s: float, cap_s: float) -> None:
        self.first_s, self.cap_s = first_s, max(first_s, cap_s)
        self._next = first_s

    def reset(self) -> None:
        self._next = self.first_s

    def next_delay(self) -> float:
        delay = self._next * (0.5 + random.random() / 2)
        self._next = min(self._next * 2, self.cap_s)
        return delay


@dataclass(eq=False)
class Heartbeat:
    """A background task's sign of life. `stuck_after_s=None`: a task that may legitimately
    sleep for long (waiting for work) is only checked for being alive."""

    name: str
    stuck_after_s: float | None = None
    last_beat: float = field(default_factory=time.monotonic)
    errors: int = 0
    failing: int = 0  # consecutive failed rounds
    task: asyncio.Task[None] | None = None
    stopping: bool = False  # set on purpose at shutdown: an ended task is then not "dead"
    # a task whose work runs beside its loop (outbound webhooks): when the oldest unfinished
    # piece of it started (time.monotonic()), or None; older than `stuck_after_s` is stuck too
    oldest_work: Callable[[], float | None] | None = None

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def succeeded(self) -> None:
        if self.failing:
            log.info(
                "%s recovered after %d failed rounds",
                self.name,
                self.failing,
                extra={"task": self.name},
            )
        self.failing = 0
        self.beat()

    def failed(self, exc: BaseException, what: str) -> None:
        """Count and log a failed round; the caller retries after its backoff."""
        self.errors += 1
        self.failing += 1
        self.beat()  # failing and retrying is alive; readiness has the database's own check
        metrics.BACKGROUND_ERRORS.labels(self.name).inc()
        # the traceback once per streak of failures, then one line per retry
        log.warning(
            "%s: %s failed (%s: %s); retrying",
            self.name,
            what,
            type(exc).__name__,
            exc,
            exc_info=exc if self.failing == 1 else None,
            extra={"task": self.name, "consecutive_failures": self.failing},
        )

    def watch(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Supervise `task`: its end, other than at shutdown, is logged and reported."""
        self.task = task
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.stopping:
            return
        reason = (
            "cancelled"
            if task.cancelled()
            else repr(task.exception())
            if task.exception() is not None
            else "returned"
        )
        metrics.BACKGROUND_ERRORS.labels(self.name).inc()
        log.error(
            "background task %s ended (%s): readiness reports it until a restart",
            self.name,
            reason,
            extra={"task": self.name},
        )

    def problem(self) -> str | None:
        if self.stopping:
            return None
        if self.task is not None and self.task.done():
            return f"{self.name} is dead"
        silent = time.monotonic() - self.last_beat
        started = self.oldest_work() if self.oldest_work is not None else None
        if started is not None:
            silent = max(silent, time.monotonic() - started)
        if self.stuck_after_s is not None and silent > self.stuck_after_s:
            return f"{self.name} is stuck (no progress for {silent:.0f} s)"
        return None


def check(heartbeats: Iterable[Heartbeat]) -> None:
    """Raise `BackgroundTaskDown` naming every dead or stuck task."""
    problems = [p for p in (h.problem() for h in heartbeats) if p is not None]
    if problems:
        raise BackgroundTaskDown("; ".join(problems))
