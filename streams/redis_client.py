"""One Redis client for the worker and the CLI, whatever the deployment.

* ``standalone``: ``redis_url`` names the server.
* ``cluster``: ``redis_url`` names any one node; the client finds the others.
* ``sentinel``: ``redis_sentinels`` are asked for the master of
  ``redis_sentinel_master``; ``redis_url`` still gives the scheme (``rediss://``
  for TLS), the credentials and the db number, its host and port are unused.

AUTH comes from the URL's user info or from ``redis_username``/``redis_password``
(the URL wins); TLS from a ``rediss://`` URL and the ``redis_ssl_*`` files.

Every checkpoint touches one key per partition, each written by one Lua script
call on that key (:func:`eval_per_key`), so the same code runs on a Cluster,
whose scripts may only touch keys of one slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, NoPermissionError, RedisClusterException, RedisError

from streams import DriftstreamError
from streams.settings import Settings

RedisClient = aioredis.Redis | RedisCluster


class SentinelMaster(aioredis.Redis):
    """The master of a Sentinel service, found again after each failover.

    Closing it also closes the connections to the sentinels.
    """

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            # redis-py types the pool as a plain ConnectionPool; a Sentinel client's carries its manager.
            await cast(Any, self.connection_pool).sentinel_manager.aclose()


def connect(settings: Settings) -> RedisClient:
    """A ``redis.asyncio`` client (``Redis`` or ``RedisCluster``) for the configured deployment.

    Raises :class:`~streams.DriftstreamError` for settings that cannot work
    together; nothing is contacted before the first command.
    """
    url = _parse(settings.redis_url)
    tls = url.pop("connection_class", None) is SSLConnection
    if settings.redis_sentinels and settings.redis_mode != "sentinel":
        raise DriftstreamError(f"redis_sentinels is set but redis_mode={settings.redis_mode!r} (use 'sentinel')")
    options = _client_options(settings, tls)
    if settings.redis_mode == "standalone":
        return aioredis.Redis.from_url(settings.redis_url, **options)
    if settings.redis_mode == "cluster":
        if "path" in url and "host" not in url:
            raise DriftstreamError(f"redis_mode='cluster' needs a redis:// or rediss:// URL, not {_safe(settings)}")
        try:
            return RedisCluster.from_url(settings.redis_url, **options)
        except RedisClusterException as exc:
            raise DriftstreamError(f"redis_mode='cluster' with redis_url={_safe(settings)}: {exc}") from exc
    return _sentinel_master(settings, url, options, tls)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (no cross-slot pipelines or transactions there)."""
    return isinstance(client, RedisCluster)


async def eval_per_key(client: RedisClient, script: AsyncScript, calls: Sequence[tuple[str, Sequence[Any]]]) -> list:
    """Run ``script`` once per ``(key, args)``, each call on its one key; the replies in order.

    Standalone and Sentinel: one round trip, a non-transactional pipeline (each
    script call is atomic on its own). Cluster: one call per key, concurrently,
    each sent to the node owning that key's slot.
    """
    if is_cluster(client):
        return list(await asyncio.gather(*(script(keys=[key], args=list(args)) for key, args in calls)))
    async with client.pipeline(transaction=False) as pipe:
        for key, args in calls:
            await script(keys=[key], args=list(args), client=cast(Any, pipe))  # redis-py types only clients here
        return list(await pipe.execute())


def _parse(redis_url: str) -> dict[str, Any]:
    try:
        return dict(parse_url(redis_url))
    except ValueError as exc:
        raise DriftstreamError(f"redis_url: {exc}") from exc


def _safe(settings: Settings) -> str:
    """The URL without its password, for error messages."""
    scheme, _, rest = settings.redis_url.partition("//")
    userinfo, at, hostpart = rest.rpartition("@")
    return f"{scheme}//{userinfo.split(':')[0] + ':***@' if at else ''}{hostpart}"


def _client_options(settings: Settings, tls: bool) -> dict[str, Any]:
    """Keyword arguments of every connection to a data node (the URL overrides them)."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
    }
    if settings.redis_username:
        options["username"] = settings.redis_username
    if settings.redis_password:
        options["password"] = settings.redis_password
    options.update(_tls_options(settings, tls))
    return options


def _tls_options(settings: Settings, tls: bool) -> dict[str, Any]:
    files = {
        "ssl_ca_certs": settings.redis_ssl_ca_certs,
        "ssl_certfile": settings.redis_ssl_certfile,
        "ssl_keyfile": settings.redis_ssl_keyfile,
    }
    given = {name: path for name, path in files.items() if path}
    if given and not tls:
        names = ", ".join(f"redis_{name}" for name in given)
        raise DriftstreamError(f"{names} set but redis_url is not rediss:// (TLS): {_safe(settings)}")
    if settings.redis_ssl_keyfile and not settings.redis_ssl_certfile:
        raise DriftstreamError("redis_ssl_keyfile needs redis_ssl_certfile (the client certificate)")
    return given


def _sentinel_addresses(value: str) -> list[tuple[str, int]]:
    addresses = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, colon, port = item.rpartition(":")
        host = host.strip("[]")  # [::1]:26379
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DriftstreamError(f"redis_sentinels: {item!r} is not host:port")
        addresses.append((host, int(port)))
    if not addresses:
        raise DriftstreamError("redis_mode='sentinel' needs redis_sentinels (host:port[,host:port])")
    return addresses


def _sentinel_master(settings: Settings, url: dict[str, Any], options: dict[str, Any], tls: bool) -> SentinelMaster:
    sentinels = _sentinel_addresses(settings.redis_sentinels)
    if "path" in url and "host" not in url:
        raise DriftstreamError(f"redis_mode='sentinel' needs a redis:// or rediss:// URL, not {_safe(settings)}")
    for name in ("username", "password", "db"):  # the URL wins, as for the other modes
        if name in url:
            options[name] = url[name]
    if tls:
        options["ssl"] = True
    sentinel_options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
        **_tls_options(settings, tls),
    }
    if tls:
        sentinel_options["ssl"] = True
    if settings.redis_sentinel_password:
        sentinel_options["password"] = settings.redis_sentinel_password
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_options, **options)
    return manager.master_for(settings.redis_sentinel_master, redis_class=SentinelMaster)


# Replies no retry can change: wrong credentials, a user without the right to a command or key.
_DENIED = ("WRONGPASS", "NOPERM", "NOAUTH", "invalid username-password pair", "Authentication required")


# What a Redis call raises when the server is down, refuses or errs: RedisClusterException (no
# cluster node answers) is not a RedisError.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)


def access_denied(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is Redis refusing the credentials or a
    permission: permanent, unlike a Redis that is down, so a worker fails rather than waits."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (AuthenticationError, NoPermissionError)):
            return True
        if isinstance(current, RedisError) and any(mark in str(current) for mark in _DENIED):
            return True  # e.g. a Sentinel's "No master found ... AuthenticationError(...)"
        current = current.__cause__ or current.__context__
    return False


def redis_problem(settings: Settings, exc: BaseException) -> str:
    """One line: which Redis, which setting, what went wrong and what to do."""
    root: BaseException = exc
    while root.__cause__ is not None:
        root = root.__cause__
    reason = " ".join(str(root).split()).rstrip(".") or type(root).__name__
    if settings.redis_mode == "sentinel":
        where, setting = f"the sentinels {settings.redis_sentinels}", "DRIFTSTREAM_REDIS_SENTINELS"
    else:
        where, setting = _safe(settings), "DRIFTSTREAM_REDIS_URL"
    if access_denied(exc):
        if "NOPERM" in reason or isinstance(root, NoPermissionError):
            user = settings.redis_username or _parse(settings.redis_url).get("username") or "default"
            return (f"Redis at {where} denied ACL user {user!r} a command or key (NOPERM: {reason}); grant "
                    f"it the commands and the {settings.state_prefix}:* keys driftstream needs (docs/redis.md)")
        return (f"Redis at {where} refused the credentials ({reason}); set the right DRIFTSTREAM_REDIS_PASSWORD "
                f"(and DRIFTSTREAM_REDIS_USERNAME for an ACL user), or put them in {setting}")
    return f"cannot reach Redis at {where} ({setting}): {reason}; start Redis there or point {setting} at a running one"
