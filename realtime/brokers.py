"""The broker a Redis URL asks for: plain pub/sub, or sharded pub/sub on a Redis Cluster.

Kept apart from both classes so that neither needs to know the other (the cluster broker
extends the plain one)."""

from __future__ import annotations

from realtime.broker import Broker
from realtime.in_process_broker import InProcessBroker
from realtime.redis_broker import RedisBroker
from realtime.redis_cluster import RedisClusterBroker, is_cluster_url


def broker_for(redis_url: str | None, drop_first_publish: bool = False) -> Broker:
    """The in-process broker without a URL; otherwise Redis or Redis Cluster by the URL's scheme."""
    if not redis_url:
        return InProcessBroker()
    if is_cluster_url(redis_url):
        return RedisClusterBroker(redis_url, drop_first_publish)
    return RedisBroker(redis_url, drop_first_publish)
