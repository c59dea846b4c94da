"""Where detector state lives between batches: Redis, or memory for the demo.

Redis layout (``P`` = ``state_prefix``, ``A`` = ``app_id``):

* ``P:A:state:{topic}:{partition}`` hash, one per partition of the events topic:
  ``v`` (layout version, ``STATE_VERSION``; an older one is migrated on load, a newer one
  is left untouched), ``offset`` (last Kafka offset of
  that partition applied to the snapshots), ``offset_ts`` (that record's Kafka
  timestamp in ms, which tells the same log from one that restarted) and
  ``model:{name}`` (msgpack snapshot of that model's monitor in that
  partition, which carries its own version). A checkpoint writes each partition with one Lua script on that one
  key, so the offset always matches the snapshots beside it, and Redis Cluster
  works (no multi-key transaction).
* ``P:baseline:{model}`` string: msgpack ``{"v": 1, "features": {name: reference}}``
  loaded by ``driftstream baseline``; ``P:baseline:{model}:version:{version}`` the
  same for one model version (its prediction reference wins over the model's).
* ``P:baseline-generation`` integer, raised by every baseline load: workers poll it
  and re-read the baselines of the models they track when it moves.

Snapshots are msgpack of plain data (never pickle): reading one cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import msgpack

from streams import DriftstreamError
from streams.redis_client import REDIS_ERRORS, access_denied, connect, eval_per_key
from streams.settings import Settings

# 2: model snapshots keyed by segment and version (version 3); 3: numeric reference builders kept as compacted
# blocks (an older release must leave them untouched, not start the model afresh); layouts 1 and 2 are migrated
STATE_VERSION = 3
LAYOUTS_READ = (1, 2, 3)
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
    offset_timestamp: int | None = None  # Kafka timestamp (ms) of the record at ``offset``
    version: int | None = STATE_VERSION  # as read back (or, refused as newer, the layout stored); None: none
    write: Write = Write.FORWARD
    # The offset the writer last saw stored (None: nothing). A forward write over anything
    # else is refused as diverged: the key lost writes (a failover, an emptied Redis) or
    # another worker wrote it, so writing only the changed models would mix two pasts.
    expected: int | None = None


@dataclass
class SaveResult:
    refused: list[Checkpoint] = field(default_factory=list)  # the store holds a later offset
    diverged: list[Checkpoint] = field(default_factory=list)  # the store is not what the writer last saw
    newer: list[Checkpoint] = field(default_factory=list)  # a newer release's layout is stored: left untouched
    written: int = 0


class StateStore(Protocol):
    async def load(self, topic: str, partition: int) -> Checkpoint | None: ...
    async def save(self, checkpoints: list[Checkpoint]) -> SaveResult:
        """Write the checkpoints; say which were refused (nothing written for those)."""
        ...

    async def load_baseline(self, model: str, version: str | None = None) -> bytes | None: ...
    async def save_baseline(self, model: str, blob: bytes, version: str | None = None) -> None:
        """Store a baseline and raise the baseline generation (running workers pick it up)."""
        ...

    async def baseline_generation(self) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


# KEYS[1] partition hash; ARGV: write mode, layout version, offset, expected stored offset
# ('' for none), then field, value pairs. Replies 1 written, 0 refused (a later offset is
# stored: a worker that lost its partition while stalled must not overwrite the new owner),
# 2 diverged (the key is not what the writer last saw), {3, layout} when a newer release's
# layout is stored (never overwritten, even by a replace).
_SAVE_PARTITION = """
local layout = tonumber(redis.call('HGET', KEYS[1], 'v'))
if layout and layout > tonumber(ARGV[2]) then
  return {3, layout}
end
local stored = redis.call('HGET', KEYS[1], 'offset')
if ARGV[1] == 'forward' then
  if stored and tonumber(stored) > tonumber(ARGV[3]) then
    return 0
  end
  if (stored or '') ~= ARGV[4] then
    return 2
  end
end
if ARGV[1] == 'replace' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'offset', ARGV[3], unpack(ARGV, 5))
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

    @property
    def client(self) -> Any:
        """The Redis client (the join store shares it)."""
        return self._redis

    def partition_key(self, topic: str, partition: int) -> str:
        return f"{self._prefix}:{self._app_id}:state:{topic}:{partition}"

    def baseline_key(self, model: str, version: str | None = None) -> str:
        key = f"{self._prefix}:baseline:{model}"
        return key if version is None else f"{key}:version:{version}"

    def generation_key(self) -> str:
        return f"{self._prefix}:baseline-generation"

    async def load(self, topic: str, partition: int) -> Checkpoint | None:
        try:
            stored = await self._redis.hgetall(self.partition_key(topic, partition))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"loading {topic}[{partition}]: {exc}") from exc
        if not stored:
            return None
        offset = _int_or(stored.pop(b"offset", None), None)
        checkpoint = Checkpoint(topic, partition, -1 if offset is None else offset,
                                offset_timestamp=_int_or(stored.pop(b"offset_ts", None), None),
                                version=_int_or(stored.pop(b"v", None), None))  # fmt: skip
        for name, blob in stored.items():
            key = name.decode(errors="replace")
            if key.startswith(_MODEL_FIELD):
                checkpoint.models[key[len(_MODEL_FIELD) :]] = blob
        return checkpoint

    async def save(self, checkpoints: list[Checkpoint]) -> SaveResult:
        calls = [
            (self.partition_key(c.topic, c.partition),
             [c.write.value, STATE_VERSION, c.offset, "" if c.expected is None else c.expected,
              "offset_ts", -1 if c.offset_timestamp is None else c.offset_timestamp,
              *(item for model, blob in c.models.items() for item in (_MODEL_FIELD + model, blob))])
            for c in checkpoints
        ]  # fmt: skip
        try:
            replies = await eval_per_key(self._redis, self._save_partition, calls)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"checkpoint of {len(checkpoints)} partition(s): {exc}") from exc
        for checkpoint, reply in zip(checkpoints, replies, strict=True):
            if isinstance(reply, list):
                checkpoint.version = int(reply[1])
        return SaveResult(
            refused=[c for c, reply in zip(checkpoints, replies, strict=True) if reply == 0],
            diverged=[c for c, reply in zip(checkpoints, replies, strict=True) if reply == 2],
            newer=[c for c, reply in zip(checkpoints, replies, strict=True) if isinstance(reply, list)],
            written=sum(1 for reply in replies if reply == 1),
        )

    async def load_baseline(self, model: str, version: str | None = None) -> bytes | None:
        try:
            blob: bytes | None = await self._redis.get(self.baseline_key(model, version))
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"loading the baseline of {model!r}: {exc}") from exc
        return blob

    async def save_baseline(self, model: str, blob: bytes, version: str | None = None) -> None:
        # Two calls, not a transaction: on Redis Cluster the keys may live on different nodes.
        try:
            await self._redis.set(self.baseline_key(model, version), blob)
            await self._redis.incr(self.generation_key())
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"saving the baseline of {model!r}: {exc}") from exc

    async def baseline_generation(self) -> int:
        try:
            raw = await self._redis.get(self.generation_key())
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"reading the baseline generation: {exc}") from exc
        return int(raw or 0)

    async def ping(self) -> bool:
        """Whether Redis answers; raises ``StoreUnavailable`` when it refuses the credentials or a
        permission (permanent: an idle worker whose password was rotated must learn it too)."""
        try:
            return bool(await self._redis.ping())
        except REDIS_ERRORS as exc:
            if access_denied(exc):
                raise StoreUnavailable(str(exc)) from exc
            return False

    async def close(self) -> None:
        await self._redis.aclose()


def _int_or(raw: bytes | None, default: int | None) -> int | None:
    """An integer field; ``default`` when absent, unreadable or -1 (written for none)."""
    try:
        value = int(raw) if raw is not None else -1
    except ValueError:
        return default
    return default if value == -1 else value


class MemoryStateStore:
    """In-process state: lost with the process. For the demo without redis-server."""

    def __init__(self) -> None:
        self._partitions: dict[tuple[str, int], Checkpoint] = {}
        self._baselines: dict[tuple[str, str | None], bytes] = {}
        self._generation = 0
        self.joins: Any = None  # the join store beside it (streams.join.MemoryJoinStore), as Redis holds both

    async def load(self, topic: str, partition: int) -> Checkpoint | None:
        stored = self._partitions.get((topic, partition))
        if stored is None:
            return None
        return Checkpoint(topic, partition, stored.offset, dict(stored.models), stored.offset_timestamp)

    async def save(self, checkpoints: list[Checkpoint]) -> SaveResult:
        result = SaveResult()
        for checkpoint in checkpoints:
            key = (checkpoint.topic, checkpoint.partition)
            stored = self._partitions.get(key)
            if checkpoint.write is Write.FORWARD:
                if stored is not None and stored.offset > checkpoint.offset:
                    result.refused.append(checkpoint)
                    continue
                if (stored.offset if stored else None) != checkpoint.expected:
                    result.diverged.append(checkpoint)
                    continue
            if stored is None or checkpoint.write is Write.REPLACE:
                stored = self._partitions[key] = Checkpoint(checkpoint.topic, checkpoint.partition, -1)
            stored.offset = checkpoint.offset
            stored.offset_timestamp = checkpoint.offset_timestamp
            stored.models.update(checkpoint.models)
            result.written += 1
        return result

    async def load_baseline(self, model: str, version: str | None = None) -> bytes | None:
        return self._baselines.get((model, version))

    async def save_baseline(self, model: str, blob: bytes, version: str | None = None) -> None:
        self._baselines[(model, version)] = blob
        self._generation += 1

    async def baseline_generation(self) -> int:
        return self._generation

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


def open_store(settings: Settings) -> StateStore:
    if settings.state_backend == "memory":
        return MemoryStateStore()
    return RedisStateStore.from_settings(settings)


async def check_store(settings: Settings) -> None:
    """Raise :class:`StoreUnavailable` (from the Redis error) unless the state store answers a
    read of a key under ``state_prefix``; a memory store always does."""
    if settings.state_backend != "redis":
        return
    store = RedisStateStore.from_settings(settings)
    try:
        await store.baseline_generation()
    finally:
        await store.close()
