"""The in-process broker: the embedded default, for a single instance."""

from __future__ import annotations

from background.supervision import Heartbeat
from realtime.broker import OnMessage, OnResync


class InProcessBroker:
    """The embedded default: one instance, so the local hub already has every event."""

    state = "local"
    reconnects = 0

    def __init__(self) -> None:
        self.heartbeats: list[Heartbeat] = []

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def subscribe(self, account_id: str) -> None:
        return None

    async def unsubscribe(self, account_id: str) -> None:
        return None

    def publish(self, account_id: str, payload: str) -> None:
        return None

    async def ping(self) -> None:
        return None
