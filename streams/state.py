"""Where detector state lives between batches: Redis, or memory for the demo.

Redis layout (``P`` = ``state_prefix``, ``A`` = ``app_id``):

* ``P:A:state:{topic}:{partition}`` hash, one per partition of the events topic:
  ``v`` (layout version, ``STATE_VERSION``), ``offset`` (last Kafka offset of
  that partition applied to the snapshots) and ``model:{name}`` (msgpack
  snapshot of that model's monitor in that partition, which carries its own
  version). A checkpoint writes each partition with one Lua script on that one
  key, so the offset always matches the snapshots beside it, and Redis Cluster
  works (no multi-key transaction).
* ``P:baseline:{model}`` string: msgpack ``{"v": 1, "features": {name: reference}}``
  loaded by ``driftstream baseline``.

Snapshots are msgpack of plain data (never pickle): reading one cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import msgpack
import redis.asyncio as aioredis

from streams import DriftstreamError
from streams.redis_client import connect, eval_per_key
from streams.settings import Settings

STATE_VERSION = 1
BASELINE_VERSION = 1
_MODEL_FIELD = "model:"


class StoreUnavailable(DriftstreamError):
    """The state store did not answer; nothing was read or written."""


def encode(data: Any) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


def decode(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False)


class Write(Enum):
    """How a checkpoint may change what a partition's key already holds."""

    FORWARD = "forward"  # refused when the stored offset is ahead (a newer owner wrote it)
    RESET = "reset"  # the partition's log restarted: the offset may go back
    REPLACE = "replace"  # the stored state was unreadable: drop every field first


@dataclass
class Checkpoint:
    """State of one partition: the last applied offset and model snapshots."""

    topic: str
    partition: int
    offset: int  # last offset applied to the snapshots; -1 before any
    models: dict[str, bytes] = field(default_factory=dict)
    version: int | None = STATE_VERSION  # as read back; None when the key had none
    write: Write = Write.FORWARD


class StateStore(Protocol):
    async def load(self, topic: str, partition: int) -> Checkpoint | None: ...
    async def save(self, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
        """Write the checkpoints; return those refused because the stored offset was ahead."""
        ...

    async def load_baseline(self, model: str) -> bytes | None: ...
    async def save_baseline(self, model: str, blob: bytes) -> None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


# KEYS[1] partition hash; ARGV: write mode, layout version, offset, then field, value pairs.
# A forward write never moves the offset back: a worker that lost its partition while
# stalled must not overwrite what the new owner saved since.
_SAVE_PARTITION = """
local stored = redis.call('HGET', KEYS[1], 'offset')
if ARGV[1] == 'forward' and stored and tonumber(stored) > tonumber(ARGV[3]) then
  return 0
end
if ARGV[1] == 'replace' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'offset', ARGV[3], unpack(ARGV, 4))
return 1
"""


class RedisStateStore:
    def __init__(self, client: Any, prefix: str, app_id: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._app_id = app_id
        self._save_partition = client.register_script(_SAVE_PARTITION)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStateStore:
        return cls(connect(settings), settings.state_prefix, settings.app_id)

    def partition_key(self, topic: str, partition: int) -> str:
        return f"{self._prefix}:{self._app_id}:state:{topic}:{partition}"

    def baseline_key(self, model: str) -> str:
        return f"{self._prefix}:baseline:{model}"

    async def load(self, topic: str, partition: int) -> Checkpoint | None:
        try:
            stored = await self._redis.hgetall(self.partition_key(topic, partition))
        except (aioredis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"loading {topic}[{partition}]: {exc}") from exc
        if not stored:
            return None
        version = stored.pop(b"v", None)
        checkpoint = Checkpoint(
            topic, partition, _int_or(stored.pop(b"offset", None), -1), version=_int_or(version, None)
        )
        for name, blob in stored.items():
            key = name.decode(errors="replace")
            if key.startswith(_MODEL_FIELD):
                checkpoint.models[key[len(_MODEL_FIELD) :]] = blob
        return checkpoint

    async def save(self, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
        calls = [
            (self.partition_key(c.topic, c.partition),
             [c.write.value, STATE_VERSION, c.offset,
              *(item for model, blob in c.models.items() for item in (_MODEL_FIELD + model, blob))])
            for c in checkpoints
        ]  # fmt: skip
        try:
            done = await eval_per_key(self._redis, self._save_partition, calls)
        except (aioredis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"checkpoint of {len(checkpoints)} partition(s): {exc}") from exc
        return [c for c, written in zip(checkpoints, done, strict=True) if not written]

    async def load_baseline(self, model: str) -> bytes | None:
        try:
            blob: bytes | None = await self._redis.get(self.baseline_key(model))
        except (aioredis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"loading the baseline of {model!r}: {exc}") from exc
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


def _int_or(raw: bytes | None, default: int | None) -> int | None:
    try:
        return int(raw) if raw is not None else default
    except ValueError:
        return default


class MemoryStateStore:
    """In-process state: lost with the process. For the demo without redis-server."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], Checkpoint] = {}
        self._baselines: dict[str, bytes] = {}

    async def load(self, topic: str, partition: int) -> Checkpoint | None:
        stored = self._partitions.get((topic, partition))
        return Checkpoint(topic, partition, stored.offset, dict(stored.models)) if stored else None

    async def save(self, checkpoints: list[Checkpoint]) -> list[Checkpoint]:
        refused = []
        for checkpoint in checkpoints:
            key = (checkpoint.topic, checkpoint.partition)
            stored = self._partitions.get(key)
            if stored is None or checkpoint.write is Write.REPLACE:
                stored = self._partitions[key] = Checkpoint(checkpoint.topic, checkpoint.partition, -1)
            elif checkpoint.write is Write.FORWARD and stored.offset > checkpoint.offset:
                refused.append(checkpoint)
                continue
            stored.offset = checkpoint.offset
            stored.models.update(checkpoint.models)
        return refused

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
