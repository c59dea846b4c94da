"""Where predictions wait for their labels: the join store (Redis, or memory for the demo).

The events path leaves, for every event with an ``event_id``, what a later label needs:
its version, segment, prediction, probabilities and event time (``JoinData``). The
labels path looks labels up by (model, event_id) and learns, per label, whether it
joined, was seen before or conflicts. Both sides are batches: one script call per
model and chunk of ``CHUNK`` keys, never one round trip per event or label.

Redis layout (``P`` = ``state_prefix``, ``A`` = ``app_id``, ``{m}`` = a hash tag of 16 hex
digits of the model name's SHA-1, so a model's keys share one Cluster slot and one script
reaches them all; the scripts build the bucket keys they touch from it, all in that slot):

* ``P:A:join:{m}:G:B`` hash, a *bucket*: field ``event_id``, value two bytes (big-endian
  length ``n``), ``n`` bytes of msgpack ``[version, segment, prediction, probabilities,
  event_time]``, then, once a label joined it, the label's *mark*: its source (labels
  partition, offset and position) and its msgpack value. ``G`` is the *generation*, the
  store time (the worker's clock) in steps of ``label_ttl / 8``; lookups read a bucket
  until ``label_ttl`` after its generation ends, so a prediction waits between ``label_ttl``
  and 9/8 of it (and the bucket lives one generation more, for replays: see ``_LOOKUP``).
  ``B`` is ``crc32(event_id)`` (``bucket_hash``) modulo the generation's bucket count, sized
  from ``EVENT_RATE`` for about 64 predictions a bucket: small hashes are stored as
  listpacks, a few bytes of overhead per field instead of about 150 for a key of its own
  (``tests/streams/test_labels.py`` measures it; docs/labels.md has the figures).
* ``P:A:join-meta:{m}`` hash: generation -> its bucket count (the first writer's stands).
* ``P:A:join-stats:{m}`` hash: ``stored`` (predictions stored, each event id once) and
  ``joined`` (predictions labeled, each once): the model's label coverage. Both expire
  ``2 label_ttl`` after the model's last new generation.

A label is looked up in the live generations, newest first (labels mostly come soon after
their predictions: one or two reads), and joins the first entry found; an event id stored
again (a replay, or a producer reusing it) is not stored while the current or the previous
generation holds it (an id re-sent later is stored again and counted again in ``stored``,
and its next label joins the newer entry).

Exactly-once: a label's mark names its source, so the same label read again after a
crash (its quality state not yet checkpointed) finds its own mark and is applied again,
while the same label sent twice (another source) is a duplicate and a different label
for the same event a conflict; neither is applied. A label whose prediction is not
there yet waits in the labels partition's checkpointed state (``streams.labels``).
"""

from __future__ import annotations

import hashlib
import math
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NamedTuple, Protocol

import msgpack
import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException

from streams.redis_client import RedisClient, connect, is_cluster
from streams.settings import Settings
from streams.state import StoreUnavailable

CHUNK = 1000  # keys per script call: a call blocks Redis for about a millisecond
MAX_DATA_BYTES = 65535  # the length prefix's reach; larger join data drops its probabilities, then is not stored
JOIN_LAYOUT = 1


class Outcome(IntEnum):
    """What the store says of one label."""

    MISSING = 0  # no prediction stored (not yet, expired, or never had that id)
    JOINED = 1  # first label of that prediction: apply it
    DUPLICATE = 2  # the same label came before from another source: not applied again
    CONFLICT = 3  # a different label came before: the first one stands
    REPLAYED = 4  # this very label was joined before a crash: apply it again (its state was not saved)


_OUTCOMES = {outcome.value: outcome for outcome in Outcome}


class JoinData(NamedTuple):
    """What a label needs of its prediction (a named tuple: one is unpacked per label)."""

    version: str | None
    segment: dict[str, Any] | None
    prediction: Any
    probabilities: dict[str, float] | None
    event_time: float

    @classmethod
    def unpack(cls, blob: bytes) -> JoinData:
        version, segment, prediction, probabilities, event_time = msgpack.unpackb(blob, raw=False)
        return cls(version, segment, prediction, probabilities, float(event_time))


def bucket_hash(event_id: str) -> int:
    """What places an event id in a generation's buckets: CRC-32 of its UTF-8 (zlib's, the same
    everywhere), computed by the client so that the scripts need not hash in Lua."""
    return zlib.crc32(event_id.encode())


_pack = msgpack.Packer(use_bin_type=True).pack  # one packer for every event: the events path's hottest call


def stored_value(data: JoinData) -> bytes | None:
    """The bytes stored for one prediction; None when too large even without its probabilities."""
    blob = _pack(data)  # a named tuple packs as the array JoinData.unpack reads
    if len(blob) > MAX_DATA_BYTES:
        if data.probabilities is not None:
            return stored_value(data._replace(probabilities=None))
        return None
    return len(blob).to_bytes(2, "big") + blob


def stored_float_values(version: str | None, predictions: np.ndarray | None, times: np.ndarray) -> list[bytes]:
    """``stored_value`` of rows without segment or probabilities whose prediction is a float (no NaN) or
    absent (``predictions`` None), built in one numpy pass: the same bytes (tests check), without a
    Python object per row but the result. msgpack writes a float as 0xcb and its 8 big-endian bytes."""
    head = b"\x95" + _pack(version) + b"\xc0"  # array of 5: version, segment nil, ...
    fields: list[tuple[str, Any]] = [("length", ">u2"), ("head", f"V{len(head)}")]
    fields += [("prediction_type", "u1"), ("prediction", ">f8")] if predictions is not None else [("nil", "u1")]
    fields += [("probabilities", "u1"), ("time_type", "u1"), ("time", ">f8")]
    rows = np.zeros(len(times), dtype=np.dtype(fields))
    rows["length"] = rows.dtype.itemsize - 2
    rows["head"] = np.frombuffer(head, dtype=f"V{len(head)}")[0]
    if predictions is not None:
        rows["prediction_type"], rows["prediction"] = 0xCB, predictions
    else:
        rows["nil"] = 0xC0
    rows["probabilities"], rows["time_type"], rows["time"] = 0xC0, 0xCB, times
    blob, size = rows.tobytes(), rows.dtype.itemsize
    return [blob[start : start + size] for start in range(0, len(blob), size)]


def mark(source: str, label: bytes) -> bytes:
    """A label's mark: its source, a NUL, its msgpack value (sources never hold a NUL)."""
    return source.encode() + b"\0" + label


@dataclass(frozen=True, slots=True)
class Lookup:
    outcome: Outcome
    data: JoinData | None  # for JOINED and REPLAYED


class JoinStore(Protocol):
    async def store(self, model: str, entries: Sequence[tuple[str, bytes]], event_rate: float) -> int:
        """Keep (event_id, stored_value) pairs for ``label_ttl``; how many were new.

        ``event_rate`` (events/s) is what the model's config expects: it sizes the buckets."""
        ...

    async def lookup(self, model: str, labels: Sequence[tuple[str, bytes]]) -> list[Lookup]:
        """Join (event_id, mark) pairs in order; a first join marks the prediction as labeled."""
        ...

    async def coverage(self, model: str) -> tuple[int, int]:
        """(predictions stored, predictions labeled) of the model, ever (each counted once)."""
        ...


GENERATIONS = 8  # a prediction waits label_ttl, plus at most one generation of label_ttl / GENERATIONS
BUCKET_TARGET = 64  # predictions per bucket at the model's EVENT_RATE: under Redis's listpack limit of 128
MAX_BUCKETS = 1 << 22

# Shared by both scripts: the bucket of an event id in generation g (bucket counts read once per call).
_BUCKETS = """
local base = ARGV[1]
local meta = KEYS[1]
local counts = {}
local function buckets(g)
  local n = counts[g]
  if n == nil then
    n = tonumber(redis.call('HGET', meta, g) or '0')
    counts[g] = n
  end
  return n
end
local function bucket(g, h)
  local n = buckets(g)
  if n == 0 then
    return nil
  end
  return base .. g .. ':' .. (h % n)
end
"""

# KEYS: meta, stats. ARGV: key base, generation, its bucket count (if new), expiry (Unix s) of its
# buckets, the oldest generation still read, seconds the meta and stats keys outlive a write, and
# the (event id, bucket hash, value) triples as one msgpack array (one argument, not three per
# event: redis-py's per-argument cost was most of the call's). Replies how many were new.
_STORE = _BUCKETS + """
local g = tonumber(ARGV[2])
if redis.call('HSETNX', meta, g, ARGV[3]) == 1 then
  -- a new generation: forget those no lookup reads any more, however sparse the traffic was
  local oldest = tonumber(ARGV[5])
  for _, old in ipairs(redis.call('HKEYS', meta)) do
    if tonumber(old) < oldest then
      redis.call('HDEL', meta, old)
    end
  end
  redis.call('EXPIRE', meta, ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
local expires = ARGV[4]
local new = 0
local items = cmsgpack.unpack(ARGV[7])
for i = 1, #items, 3 do
  local id, h = items[i], items[i + 1]
  local previous = bucket(g - 1, h)
  if not (previous and redis.call('HEXISTS', previous, id) == 1) then
    local key = bucket(g, h)
    if redis.call('HSETNX', key, id, items[i + 2]) == 1 then
      new = new + 1
      if redis.call('HLEN', key) == 1 then
        redis.call('EXPIREAT', key, expires)
      end
    end
  end
end
if new > 0 then
  redis.call('HINCRBY', KEYS[2], 'stored', new)
end
return new
"""

# KEYS: meta, stats. ARGV: key base, oldest live generation, newest, and the (event id, bucket
# hash, mark) triples as one msgpack array. Replies one msgpack array: per label, its outcome and (JOINED, REPLAYED)
# the prediction's join data (else ""). Newest first;
# the generation
# before the oldest live one (its buckets are kept one generation longer) is read for a label's own
# mark only: a label joined just before a crash is applied again even if its prediction has aged
# out of reach since.
_LOOKUP = _BUCKETS + """
local oldest, newest = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local joined = 0
local items = cmsgpack.unpack(ARGV[4])
for i = 1, #items, 3 do
  local id, h, mark = items[i], items[i + 1], items[i + 2]
  local key, value = nil, nil
  for g = newest, oldest, -1 do
    key = bucket(g, h)
    if key then
      value = redis.call('HGET', key, id)
      if value then
        break
      end
    end
  end
  if not value then
    local grace = bucket(oldest - 1, h)
    local aged = grace and redis.call('HGET', grace, id)
    if aged and string.sub(aged, -#mark) == mark then
      key, value = grace, aged
    end
  end
  if not value then
    out[#out + 1] = 0
    out[#out + 1] = ''
  else
    local n = string.byte(value, 1) * 256 + string.byte(value, 2)
    local data = string.sub(value, 3, 2 + n)
    local seen = string.sub(value, 3 + n)
    if seen == '' then
      redis.call('HSET', key, id, value .. mark)
      joined = joined + 1
      out[#out + 1] = 1
      out[#out + 1] = data
    elseif seen == mark then
      out[#out + 1] = 4
      out[#out + 1] = data
    else
      local theirs = string.sub(seen, string.find(seen, '\\0', 1, true) + 1)
      local mine = string.sub(mark, string.find(mark, '\\0', 1, true) + 1)
      out[#out + 1] = (theirs == mine) and 2 or 3
      out[#out + 1] = ''
    end
  end
end
if joined > 0 then
  redis.call('HINCRBY', KEYS[2], 'joined', joined)
end
return cmsgpack.pack(out)
"""


class RedisJoinStore:
    def __init__(self, client: RedisClient, prefix: str, app_id: str, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._redis = client
        self._prefix = f"{prefix}:{app_id}"
        self._ttl = max(float(ttl), 1.0)
        self._step = self._ttl / GENERATIONS
        self._clock = clock
        self._store = client.register_script(_STORE)
        self._lookup = client.register_script(_LOOKUP)

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisJoinStore:
        return cls(connect(settings), settings.state_prefix, settings.app_id, settings.label_ttl)

    @staticmethod
    def tag(model: str) -> str:
        """The model's hash tag: a digest, so that no model name (``}x``, ``a{b}``) splits its keys' slots."""
        return "{" + hashlib.sha1(model.encode()).hexdigest()[:16] + "}"

    def bucket_base(self, model: str) -> str:
        return f"{self._prefix}:join:{self.tag(model)}:"

    def meta_key(self, model: str) -> str:
        return f"{self._prefix}:join-meta:{self.tag(model)}"

    def stats_key(self, model: str) -> str:
        return f"{self._prefix}:join-stats:{self.tag(model)}"

    def buckets(self, event_rate: float) -> int:
        """Buckets of one generation: about BUCKET_TARGET predictions each at ``event_rate``."""
        return max(1, min(MAX_BUCKETS, math.ceil(event_rate * self._step / BUCKET_TARGET)))

    def _generation(self) -> int:
        return math.floor(self._clock() / self._step)

    async def _calls(self, script: Any, model: str, head: list[Any], items: list[Any]) -> list[Any]:
        """The script over ``items`` (flat: id, bucket hash, value or mark) in chunks of CHUNK; the replies."""
        keys = [self.meta_key(model), self.stats_key(model)]
        step = 3 * CHUNK
        # Strings as msgpack raw (no bin type): Lua's cmsgpack reads them as Lua strings, bytes intact.
        calls = [[*head, msgpack.packb(items[i : i + step], use_bin_type=False)] for i in range(0, len(items), step)]
        try:
            if is_cluster(self._redis) or len(calls) == 1:
                # In order: two labels of one event in different chunks must meet it in stream order.
                return [await script(keys=keys, args=args) for args in calls]
            async with self._redis.pipeline(transaction=False) as pipe:
                for args in calls:
                    await script(keys=keys, args=args, client=pipe)
                return list(await pipe.execute())
        except (aioredis.RedisError, RedisClusterException, OSError) as exc:
            raise StoreUnavailable(f"join store of model {model!r}: {exc}") from exc

    async def store(self, model: str, entries: Sequence[tuple[str, bytes]], event_rate: float) -> int:
        if not entries:
            return 0
        g = self._generation()
        # Read while live (GENERATIONS after its own), then one more generation for replays' marks.
        expires = math.ceil((g + 2) * self._step + self._ttl)
        outlive = math.ceil(2 * self._ttl + 2 * self._step)
        head = [self.bucket_base(model), g, self.buckets(event_rate), expires, g - GENERATIONS - 1, outlive]
        items = [item for event_id, value in entries for item in (event_id, bucket_hash(event_id), value)]
        return sum(int(reply) for reply in await self._calls(self._store, model, head, items))

    async def lookup(self, model: str, labels: Sequence[tuple[str, bytes]]) -> list[Lookup]:
        if not labels:
            return []
        g = self._generation()
        head = [self.bucket_base(model), g - GENERATIONS, g]
        items = [item for event_id, marked in labels for item in (event_id, bucket_hash(event_id), marked)]
        found: list[Lookup] = []
        for blob in await self._calls(self._lookup, model, head, items):
            reply = msgpack.unpackb(blob, raw=True)
            for i in range(0, len(reply), 2):
                outcome = _OUTCOMES[reply[i]]
                data = JoinData.unpack(reply[i + 1]) if outcome in (Outcome.JOINED, Outcome.REPLAYED) else None
                found.append(Lookup(outcome, data))
        return found

    async def coverage(self, model: str) -> tuple[int, int]:
        try:
            stored, joined = await self._redis.hmget(self.stats_key(model), ["stored", "joined"])
        except (aioredis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"label coverage of model {model!r}: {exc}") from exc
        return int(stored or 0), int(joined or 0)


class MemoryJoinStore:
    """In-process join store: lost with the process. For the demo without redis-server."""

    def __init__(self, ttl: float, clock: Any = time.time) -> None:
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, bytes]] = {}  # (model, id) -> (expires, value)
        self._stats: dict[str, list[int]] = {}

    def _get(self, model: str, event_id: str) -> bytes | None:
        entry = self._entries.get((model, event_id))
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[(model, event_id)]
            return None
        return entry[1]

    async def store(self, model: str, entries: Sequence[tuple[str, bytes]], event_rate: float) -> int:
        new = 0
        expires = self._clock() + self._ttl
        for event_id, value in entries:
            if self._get(model, event_id) is None:
                self._entries[(model, event_id)] = (expires, value)
                new += 1
        self._stats.setdefault(model, [0, 0])[0] += new
        return new

    async def lookup(self, model: str, labels: Sequence[tuple[str, bytes]]) -> list[Lookup]:
        found: list[Lookup] = []
        for event_id, label_mark in labels:
            value = self._get(model, event_id)
            if value is None:
                found.append(Lookup(Outcome.MISSING, None))
                continue
            (n,) = struct.unpack(">H", value[:2])
            data, seen = value[2 : 2 + n], value[2 + n :]
            if not seen:
                expires, _ = self._entries[(model, event_id)]
                self._entries[(model, event_id)] = (expires, value + label_mark)
                self._stats.setdefault(model, [0, 0])[1] += 1
                found.append(Lookup(Outcome.JOINED, JoinData.unpack(data)))
            elif seen == label_mark:
                found.append(Lookup(Outcome.REPLAYED, JoinData.unpack(data)))
            else:
                same = seen.split(b"\0", 1)[1] == label_mark.split(b"\0", 1)[1]
                found.append(Lookup(Outcome.DUPLICATE if same else Outcome.CONFLICT, None))
        return found

    async def coverage(self, model: str) -> tuple[int, int]:
        stored, joined = self._stats.get(model, [0, 0])
        return stored, joined


def open_join_store(settings: Settings) -> JoinStore:
    if settings.state_backend == "memory":
        return MemoryJoinStore(settings.label_ttl)
    return RedisJoinStore.from_settings(settings)
