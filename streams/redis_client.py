"""One Redis client for the worker and the CLI, whatever the deployment.

Standalone and Cluster connect to ``redis_url``; Sentinel asks the sentinels
for the current master. AUTH (password, ACL user) and TLS come from settings.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from streams.settings import Settings


def connect(settings: Settings) -> Any:
    """A ``redis.asyncio`` client (``Redis`` or ``RedisCluster``) for the configured deployment."""
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
    }
    if settings.redis_ssl_ca_certs:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return aioredis.Redis.from_url(settings.redis_url_with_auth(), **options)
