"""Sharded pub/sub on a Redis Cluster: `CREDITSTREAM_REDIS_URL=redis+cluster://…` makes the
Redis broker this subclass of it (realtime/brokers.py chooses by the URL's scheme)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from realtime.broker import CHANNEL_PREFIX, OnMessage, OnResync
from realtime.redis_broker import RedisBroker, text_of

log = logging.getLogger("creditstream.broker")

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme → TLS


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """`redis+cluster://[user:password@]host:port[,host:port…][/0]`: the seed nodes (any of
    the cluster's nodes; the rest are discovered) and the connection options."""
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in CLUSTER_SCHEMES or not rest:
        raise ValueError(f"not a Redis Cluster URL: {scheme}://…")
    netloc, _, path = rest.partition("/")
    if path.split("?", 1)[0] not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    options: dict[str, Any] = {"ssl": CLUSTER_SCHEMES[scheme.lower()]}
    if "@" in netloc:
        credentials, _, netloc = netloc.rpartition("@")
        user, colon, password = credentials.partition(":")
        if colon:
            options["username"] = unquote(user) or None
            options["password"] = unquote(password)
        else:
            options["password"] = unquote(user)
    seeds = []
    for address in netloc.split(","):
        host, colon, port = address.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster seed needs host:port, not {address!r}")
        seeds.append((host.strip("[]"), int(port)))
    return seeds, options


class RedisClusterBroker(RedisBroker):
    """Sharded pub/sub on a Redis Cluster (Redis 7): an account's channel lives on the shard
    that owns its hash slot, SPUBLISH reaches only that shard, and this instance holds one
    subscriber connection per master, SSUBSCRIBEd to the channels of its local feeds there.

    A listener round refreshes the slot map, connects to every master, subscribes, resyncs the
    hub from the journal, then reads all shards; any shard's error (a node down, a slot moved
    away: Redis then sends `sunsubscribe` for the channel) ends the round, and the next one
    starts over from a fresh slot map. What was missed meanwhile comes from the journal."""

    def __init__(self, url: str, drop_first_publish: bool = False) -> None:
        super().__init__(url, drop_first_publish)
        self._seeds, self._options = parse_cluster_url(url)
        self._cluster: RedisCluster | None = None
        self._shards: dict[str, aioredis.client.PubSub] = {}  # master node name → subscriber
        self._shard_clients: list[aioredis.Redis] = []
        self._unsubscribing: dict[str, int] = {}  # channel → our SUNSUBSCRIBEs not yet confirmed
        self._topology_changed = asyncio.Event()

    async def start(self, on_message: OnMessage, on_resync: OnResync) -> None:
        self._on_message, self._on_resync = on_message, on_resync
        self._cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._seeds],
            socket_connect_timeout=1.0,
            socket_timeout=2.0,
            **self._options,
        )
        self._tasks = [
            self.listener.watch(asyncio.create_task(self._listen_forever(), name="redis-listener")),
            self.publisher.watch(
                asyncio.create_task(self._publish_forever(), name="redis-publisher")
            ),
        ]

    async def stop(self) -> None:
        await super().stop()
        if self._cluster is not None:
            await self._cluster.aclose()

    async def ping(self) -> None:
        if self._cluster is None:
            raise ConnectionError("broker not started")
        await asyncio.wait_for(self._cluster.ping(target_nodes=RedisCluster.PRIMARIES), timeout=1.0)

    def _shard_for(self, channel: str) -> aioredis.client.PubSub | None:
        assert self._cluster is not None
        try:
            return self._shards.get(self._node_of(channel))
        except RedisError:  # the slot is not covered right now
            return None

    def _node_of(self, channel: str) -> str:
        """The name (host:port) of the master that owns the channel's slot."""
        assert self._cluster is not None
        node = self._cluster.get_node_from_key(channel)
        if node is None:
            raise RedisError(f"no node serves the slot of {channel}")
        return str(node.name)

    def _subscribed_mode(self) -> bool:
        return self.state == "connected"

    async def _send_changes(self, wanted: list[str], unwanted: list[str]) -> None:
        # one slot per SSUBSCRIBE: a command per channel, to the shard that owns it
        for command, channels in (("subscribe", wanted), ("unsubscribe", unwanted)):
            for channel in channels:
                shard = self._shard_for(channel)
                if shard is None:  # the slot map changed since the round began
                    self._topology_changed.set()
                    continue
                try:
                    if command == "unsubscribe":
                        self._unsubscribing[channel] = self._unsubscribing.get(channel, 0) + 1
                        await shard.sunsubscribe(channel)
                    else:
                        await shard.ssubscribe(channel)
                except (RedisError, OSError):
                    log.warning("redis s%s %s failed; the listener will retry", command, channel)

    async def _connect(self) -> None:
        assert self._cluster is not None
        self._topology_changed.clear()
        self._unsubscribing.clear()
        await (
            self._cluster.initialize()
        ) if self.state == "starting" else await self._cluster.nodes_manager.initialize()
        async with self._write_lock:
            self._drop_changes()  # all of `_channels` goes out now; later changes once connected
            by_node: dict[str, list[str]] = {
                node.name: [] for node in self._cluster.get_primaries()
            }
            for channel in self._channels:
                by_node.setdefault(self._node_of(channel), []).append(channel)
            for node in self._cluster.get_primaries():
                client = aioredis.Redis(
                    host=node.host,
                    port=int(node.port),
                    retry=Retry(NoBackoff(), 0),
                    socket_connect_timeout=1.0,
                    socket_timeout=2.0,
                    health_check_interval=5,
                    **self._options,
                )
                self._shard_clients.append(client)
                pubsub = client.pubsub()
                # a placeholder channel on this shard keeps the connection in subscribed mode
                await pubsub.ssubscribe(self._placeholder_on(node.name))
                for channel in by_node.get(node.name, ()):
                    await pubsub.ssubscribe(channel)  # one slot per SSUBSCRIBE
                self._shards[node.name] = pubsub
        await self._connected()

    def _placeholder_on(self, node_name: str) -> str:
        for index in range(100_000):
            channel = f"{CHANNEL_PREFIX}_{{{index}}}"
            if self._node_of(channel) == node_name:
                return channel
        raise RuntimeError(f"no channel hashes to a slot of {node_name}")

    async def _read_messages(self) -> None:
        readers: list[asyncio.Task[Any]] = [
            asyncio.create_task(self._read_shard(pubsub), name=f"redis-shard-{name}")
            for name, pubsub in self._shards.items()
        ]
        readers.append(asyncio.create_task(self._topology_changed.wait()))
        try:
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        for reader in done:
            reader.result()  # a shard's error ends the round
        raise RuntimeError("the cluster's slot map changed")

    async def _read_shard(self, pubsub: aioredis.client.PubSub) -> None:
        assert self._on_message is not None
        while True:
            self.listener.beat()
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            kind, channel = message.get("type"), text_of(message["channel"])
            if kind == "sunsubscribe":
                pending = self._unsubscribing.get(channel, 0)
                if pending:
                    self._unsubscribing[channel] = pending - 1
                    if pending == 1:
                        del self._unsubscribing[channel]
                elif channel in self._channels or channel.startswith(CHANNEL_PREFIX + "_{"):
                    # Redis dropped it: its slot moved to another node
                    raise RuntimeError(f"the slot of {channel} moved")
                continue
            if kind == "smessage":
                await self._hand_over(channel, message["data"])

    async def _close_pubsub(self) -> None:
        shards, self._shards = self._shards, {}
        clients, self._shard_clients = self._shard_clients, []
        for pubsub in shards.values():
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # unannotated before redis 8.2
            except (RedisError, OSError):
                pass
        for client in clients:
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass

    # sharded pub/sub: each message goes to the shard that owns its channel's slot
    publish_command = "SPUBLISH"

    def _publishing_client(self) -> Any:
        assert self._cluster is not None
        return self._cluster
