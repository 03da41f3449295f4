"""Settings, connecting to Redis (external, cluster or embedded), and the startup checks."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import redis.asyncio
import redis.asyncio.cluster

from events.chain import load_seal_key
from events.embedded import EmbeddedRedis, EmbeddedRedisError
from events.errors import StoreConfigError, redis_errors
from events.keys import DEFAULT_PARTITIONS, DEFAULT_PREFIX, Keyspace
from events.store import Redis, RedisEventStore

log = logging.getLogger("coda.redis")

MIN_REDIS: Final = (6, 2)
STORAGE_FORMAT: Final = 1  # the layout of keys, index and meta described in docs/storage.md
CLUSTER_SCHEMES: Final = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_TRUE: Final = {"1", "true", "yes", "on"}
CLIENT_TIMEOUTS: Final = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
# A server process's connections to a single Redis, at most: commands wait for a free one (up
# to POOL_WAIT seconds) rather than open more. Blocking reads share one (events/hub.py), so a
# few serve any number of clients.
DEFAULT_MAX_CONNECTIONS: Final = 8
POOL_WAIT: Final = 10.0


@dataclass(frozen=True)
class RedisSettings:
    """Where coda keeps its events. With no `url`, an embedded Redis runs in `data_dir`."""

    url: str | None = None
    cluster: bool = False
    data_dir: Path = Path(".coda")
    appendfsync: str = "everysec"
    prefix: str = DEFAULT_PREFIX
    partitions: int = DEFAULT_PARTITIONS
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # per process, to a single Redis
    client_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> RedisSettings:
        """REDIS_URL, CODA_REDIS_CLUSTER, CODA_DATA_DIR, CODA_APPENDFSYNC, CODA_KEY_PREFIX,
        CODA_PARTITIONS, CODA_REDIS_MAX_CONNECTIONS."""
        try:
            partitions = int(environ.get("CODA_PARTITIONS", DEFAULT_PARTITIONS))
        except ValueError as exc:
            raise StoreConfigError("CODA_PARTITIONS must be a whole number") from exc
        text = environ.get("CODA_REDIS_MAX_CONNECTIONS", str(DEFAULT_MAX_CONNECTIONS))
        if not (text.isascii() and text.isdigit()) or int(text) < 2:
            raise StoreConfigError(
                f"CODA_REDIS_MAX_CONNECTIONS must be a whole number of at least 2, not {text!r}"
            )
        return cls(
            url=environ.get("REDIS_URL") or None,
            cluster=environ.get("CODA_REDIS_CLUSTER", "").lower() in _TRUE,
            data_dir=Path(environ.get("CODA_DATA_DIR", ".coda")),
            appendfsync=environ.get("CODA_APPENDFSYNC", "everysec"),
            prefix=environ.get("CODA_KEY_PREFIX", DEFAULT_PREFIX),
            partitions=partitions,
            max_connections=int(text),
        )

    @property
    def keys(self) -> Keyspace:
        return Keyspace(prefix=self.prefix, partitions=self.partitions)


def pool_exhausted(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is a bounded pool's wait for a free connection
    running out: the process is busy, Redis itself may be fine."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, redis.exceptions.ConnectionError) and isinstance(
            seen.__cause__, TimeoutError
        ):
            return True
        seen = seen.__cause__
    return False


def client_for(
    url: str, *, cluster: bool = False, max_connections: int | None = None, **options: Any
) -> Redis:
    """A client for `url`; `redis+cluster://` (or `cluster=True`) selects Redis Cluster.

    A Redis that stops answering is reported (StoreUnavailableError) after CLIENT_TIMEOUTS
    rather than hanging a request; `options` override them. With `max_connections`, a single
    Redis gets at most so many, and a command waits for a free one (up to POOL_WAIT seconds);
    a cluster client keeps its own pool per node.
    """
    scheme, sep, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        url, cluster = f"{CLUSTER_SCHEMES[scheme]}{sep}{rest}", True
    options = {**CLIENT_TIMEOUTS, **options}
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(url, **options)
    if max_connections is not None:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=POOL_WAIT, **options
        )
        return redis.asyncio.Redis.from_pool(pool)
    return redis.asyncio.Redis.from_url(url, **options)


@asynccontextmanager
async def open_store(settings: RedisSettings) -> AsyncIterator[RedisEventStore]:
    """Connect (starting the embedded Redis if no URL is set), check the server, yield a store."""
    keys = settings.keys
    server = None
    url = settings.url
    if url is None:
        server = EmbeddedRedis(settings.data_dir, appendfsync=settings.appendfsync)
        try:
            server.start()
        except EmbeddedRedisError as exc:
            raise StoreConfigError(str(exc)) from exc
        url = server.url
    client = client_for(
        url,
        cluster=settings.cluster,
        max_connections=settings.max_connections,
        **settings.client_options,
    )
    try:
        await check_server(client)
        await ensure_config(client, keys)
        yield RedisEventStore(client, keys, load_seal_key(settings.data_dir))
    finally:
        await client.aclose()
        if server is not None:
            server.stop()


async def check_server(client: Redis) -> None:
    """Refuse a Redis that could lose history (eviction) or lacks what the script needs."""
    for node, info in (await _info(client)).items():
        check_node(node, info)


def check_node(node: str, info: Mapping[str, Any]) -> None:
    """The startup check of one node, from its INFO."""
    version = str(info.get("redis_version", "0.0"))
    if tuple(int(p) for p in re.findall(r"[0-9]+", version)[:2]) < MIN_REDIS:
        raise StoreConfigError(f"{node}: Redis {version} is too old; coda needs >= 6.2")
    policy = info.get("maxmemory_policy", "noeviction")
    if policy != "noeviction":
        raise StoreConfigError(
            f"{node}: maxmemory-policy is {policy}; set it to noeviction "
            "(eviction would delete history)"
        )
    if not int(info.get("aof_enabled", 0)):
        log.warning(
            "%s: append-only persistence is off: acknowledged events may be lost if Redis restarts",
            node,
        )


async def ensure_config(client: Redis, keys: Keyspace) -> None:
    """Record the partition count and storage format on first use; refuse others later.

    The partition count is fixed for the life of a deployment (it places every thread), and
    a store must not write into data laid out by another storage format.
    """
    wanted = {"partitions": str(keys.partitions), "format": str(STORAGE_FORMAT)}
    with redis_errors():
        for field, value in wanted.items():
            await client.hsetnx(keys.config, field, value)
        stored = cast(list[bytes | None], await client.hmget(keys.config, list(wanted)))
    found = dict(zip(wanted, (v.decode() if v else "?" for v in stored), strict=True))
    if found["partitions"] != wanted["partitions"]:
        raise StoreConfigError(
            f"this deployment uses {found['partitions']} partitions, not {keys.partitions}: "
            "the partition count is fixed for the life of a deployment"
        )
    if found["format"] != wanted["format"]:
        raise StoreConfigError(
            f"the data under {keys.prefix!r} is in storage format {found['format']}; this "
            f"version of coda reads and writes format {STORAGE_FORMAT}"
        )


async def _info(client: Redis) -> dict[str, dict[str, Any]]:
    """INFO of every node (one for a single Redis, each primary of a cluster)."""
    with redis_errors():
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            return {
                node.name: await client.info(target_nodes=node) for node in client.get_primaries()
            }
        return {"redis": await client.info()}
