"""Fan-out between instances: the one small interface every broker has, and the channel names.

Delivery through a broker is best effort by design: the hub repairs any loss from the journal
(gap-fill on a skipped seq, a periodic head check, and a full resync after a reconnect). The
brokers: the in-process one (realtime/in_process_broker.py), Redis pub/sub
(realtime/redis_broker.py) and its Redis Cluster variant, sharded pub/sub
(realtime/redis_cluster.py); realtime/brokers.py picks one by URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from background.supervision import Heartbeat

CHANNEL_PREFIX = "creditstream:account:"

OnMessage = Callable[[str, str], Awaitable[None]]
OnResync = Callable[[], Awaitable[None]]


def channel_for(account_id: str) -> str:
    return CHANNEL_PREFIX + account_id


class Broker(Protocol):
    state: str
    reconnects: int
    heartbeats: list[Heartbeat]  # its supervised background tasks

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None: ...

    async def stop(self) -> None: ...

    async def subscribe(self, account_id: str) -> None: ...

    async def unsubscribe(self, account_id: str) -> None: ...

    def publish(self, account_id: str, payload: str) -> None:
        """Queue a message for other instances; never blocks, never raises."""

    async def ping(self) -> None: ...
