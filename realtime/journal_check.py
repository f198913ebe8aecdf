"""The periodic journal check: what recovers events that were committed but never published
(a crash between commit and publish, a lost pub/sub message).

Each check asks the journal only which accounts had events since the previous check (minus
`CHECK_OVERLAP`, for commits still in flight and clock skew between instances), so its cost
follows the rate of writes, not the number of subscribed accounts: idle subscribers cost
nothing. The accounts that moved are handed to the hub, which fills the feeds that are behind,
one check later: an event just committed is on its way through Redis when a check first sees
it, and filling it then would read the journal (holding the feed, and so the Redis listener
waiting on it) for an event about to arrive anyway. What the previous check saw and the feed
still lacks was lost: that is filled. A lost publish is so found within two intervals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from background.supervision import Backoff, Heartbeat
from realtime.feeds import EventJournal

POLL_BACKOFF_CAP_S = 5.0  # while the database is down
POLL_STUCK_S = 60.0  # one check waits for the database at most its own timeouts
STOP_PATIENCE_S = 5.0
# an event becomes visible at its commit, after its created_at (the writer's clock): every check
# looks this far back before the previous one, so a late commit or a skewed clock is still seen
CHECK_OVERLAP = timedelta(seconds=2)

CatchUp = Callable[[dict[str, int]], Awaitable[None]]


class JournalCheck:
    def __init__(
        self,
        journal: EventJournal,
        catch_up: CatchUp,
        watching: Callable[[], bool],
        interval_s: float,
    ) -> None:
        self.journal = journal
        self.catch_up = catch_up  # given each moved account's head
        self.watching = watching  # whether any feed is open here (else nothing is read)
        self.interval_s = interval_s
        self.heartbeat = Heartbeat("journal-check", POLL_STUCK_S)
        self._checked_from: datetime | None = None  # the next window starts here
        self._seen: dict[str, int] = {}  # the heads the previous check read, filled by the next
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self, window_from: datetime) -> None:
        """Check every `interval_s`, the first window starting at `window_from`."""
        self._checked_from = window_from
        self._task = self.heartbeat.watch(
            asyncio.create_task(self._run_forever(), name="hub-poller")
        )

    async def stop(self) -> None:
        self.heartbeat.stopping = True
        self._stopping.set()  # let a check in progress finish rather than cancel its query
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, STOP_PATIENCE_S)
            except TimeoutError:
                pass  # wait_for has cancelled it

    async def check(self) -> None:
        """Catch up every local feed still behind a head the previous check read; read the
        heads of the accounts with events since then for the next one."""
        started = self.journal.now()
        since = (started if self._checked_from is None else self._checked_from) - CHECK_OVERLAP
        moved = await self.journal.moved_since(since) if self.watching() else {}
        await self.catch_up(self._seen)
        # only once it succeeded: a failed check is retried whole
        self._checked_from, self._seen = started, moved

    async def _run_forever(self) -> None:
        """While checks fail (the database is down) it backs off up to POLL_BACKOFF_CAP_S, and
        the first success after that catches every feed up."""
        backoff = Backoff(self.interval_s, POLL_BACKOFF_CAP_S)
        wait = self.interval_s
        while not self._stopping.is_set():
            self.heartbeat.beat()
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
                return
            except TimeoutError:
                pass
            try:
                await self.check()
                self.heartbeat.succeeded()
                backoff.reset()
                wait = self.interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.heartbeat.failed(exc, "checking the journal heads")
                wait = backoff.next_delay()
