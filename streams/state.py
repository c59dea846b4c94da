"""Where detector state lives between batches: Redis, or memory for the demo.

Redis layout (``P`` = ``state_prefix``):

* ``P:{app_id}:state:{topic}:{partition}`` hash: ``offset`` (last applied
  Kafka offset of that partition) and ``model:{name}`` (msgpack snapshot of
  that model's monitor in that partition). Written in one MULTI/EXEC per
  checkpoint, so the offset always matches the snapshots beside it.
* ``P:baseline:{model}`` string: msgpack ``{"v": 1, "features": {name: reference}}``
  loaded by ``driftstream baseline``.

Snapshots are msgpack of plain data (never pickle): reading one cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import redis.asyncio as aioredis

from streams.settings import Settings

BASELINE_VERSION = 1
_MODEL_FIELD = "model:"


def encode(data: Any) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


def decode(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


@dataclass
class Checkpoint:
    """State of one partition: the last applied offset and model snapshots."""

    topic: str
    partition: int
    offset: int  # last offset applied to the snapshots; -1 before any
    models: dict[str, bytes] = field(default_factory=dict)


class StateStore(Protocol):
    async def load(self, topic: str, partition: int) -> Checkpoint | None: ...
    async def save(self, checkpoints: list[Checkpoint]) -> None: ...
    async def load_baseline(self, model: str) -> bytes | None: ...
    async def save_baseline(self, model: str, blob: bytes) -> None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class RedisStateStore:
    def __init__(self, client: aioredis.Redis, prefix: str, app_id: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._app_id = app_id

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStateStore:
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        if settings.redis_ssl_ca_certs:
            options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
        client = aioredis.Redis.from_url(settings.redis_url_with_auth(), **options)
        return cls(client, settings.state_prefix, settings.app_id)

    def partition_key(self, topic: str, partition: int) -> str:
        return f"{self._prefix}:{self._app_id}:state:{topic}:{partition}"

    def baseline_key(self, model: str) -> str:
        return f"{self._prefix}:baseline:{model}"

    async def load(self, topic: str, partition: int) -> Checkpoint | None:
        stored = await self._redis.hgetall(self.partition_key(topic, partition))
        if not stored:
            return None
        checkpoint = Checkpoint(topic, partition, int(stored.pop(b"offset", -1)))
        for name, blob in stored.items():
            key = name.decode()
            if key.startswith(_MODEL_FIELD):
                checkpoint.models[key[len(_MODEL_FIELD) :]] = blob
        return checkpoint

    async def save(self, checkpoints: list[Checkpoint]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for checkpoint in checkpoints:
                mapping: dict[str, bytes | int] = {"offset": checkpoint.offset}
                mapping.update({_MODEL_FIELD + m: blob for m, blob in checkpoint.models.items()})
                pipe.hset(self.partition_key(checkpoint.topic, checkpoint.partition), mapping=mapping)
            await pipe.execute()

    async def load_baseline(self, model: str) -> bytes | None:
        blob: bytes | None = await self._redis.get(self.baseline_key(model))
        return blob

    async def save_baseline(self, model: str, blob: bytes) -> None:
        await self._redis.set(self.baseline_key(model), blob)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (aioredis.RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()


class MemoryStateStore:
    """In-process state: lost with the process. For the demo without redis-server."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], Checkpoint] = {}
        self._baselines: dict[str, bytes] = {}

    async def load(self, topic: str, partition: int) -> Checkpoint | None:
        stored = self._partitions.get((topic, partition))
        return Checkpoint(topic, partition, stored.offset, dict(stored.models)) if stored else None

    async def save(self, checkpoints: list[Checkpoint]) -> None:
        for checkpoint in checkpoints:
            stored = self._partitions.setdefault(
                (checkpoint.topic, checkpoint.partition), Checkpoint(checkpoint.topic, checkpoint.partition, -1)
            )
            stored.offset = checkpoint.offset
            stored.models.update(checkpoint.models)

    async def load_baseline(self, model: str) -> bytes | None:
        return self._baselines.get(model)

    async def save_baseline(self, model: str, blob: bytes) -> None:
        self._baselines[model] = blob

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def open_store(settings: Settings) -> StateStore:
    if settings.state_backend == "memory":
        return MemoryStateStore()
    return RedisStateStore.from_settings(settings)
