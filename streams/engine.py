"""The per-batch hot path, independent of Faust so it can be driven and tested directly.

``Engine.process`` takes a batch of Kafka records from any partitions and
returns what to publish. Detector state is kept per (partition, model) and
checkpointed to the state store with the offset it covers; records at or
below a partition's checkpointed offset were already applied and are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import orjson

from detectors import SnapshotError
from detectors.columns import Column
from detectors.config import MonitorConfig
from detectors.monitors import PREDICTION, Alert, ModelBatch, ModelMonitor
from detectors.monitors.dataset import DETECTOR as DATASET
from detectors.monitors.freshness import DETECTOR as FRESHNESS
from detectors.monitors.model import upgrade_snapshot
from detectors.monitors.multivariate import DETECTORS as MULTIVARIATE
from detectors.monitors.quality import LabeledRows, QualityMonitor, QualityReference
from detectors.reference import Reference, reference_from_plain
from detectors.retrain import RetrainPolicy, SeenAlert
from streams.alerts import to_wire
from streams.columnar import ColumnarBatch, decode_events, is_arrow
from streams.decode import Event, Invalid, Label, Limits, Rejection, decode_labels
from streams.join import (
    JoinData,
    JoinStore,
    Lookup,
    MemoryJoinStore,
    Outcome,
    RedisJoinStore,
    mark,
    stored_float_values,
    stored_value,
)
from streams.labels import ModelLabels, WaitingLabel
from streams.metrics import Metrics, observe_many
from streams.retrain import read_alert
from streams.retrain import to_wire as retrain_wire
from streams.settings import Settings
from streams.state import (
    BASELINE_VERSION,
    LAYOUTS_READ,
    STATE_VERSION,
    Checkpoint,
    MemoryStateStore,
    RedisStateStore,
    SaveResult,
    StateStore,
    Write,
    decode,
    encode,
)

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
CHECKPOINT_GROUP_BYTES = 32 * 1024 * 1024  # snapshots encoded and held at once by a checkpoint
BASELINE_POLL_SECONDS = 2.0  # how often a worker asks whether a baseline was loaded
# The whole model's own detectors (no feature): their alerts name the latest version seen, as input features' do.
_MODEL_DETECTORS = frozenset({DATASET, FRESHNESS, *MULTIVARIATE})
BASELINE_CACHE_ENTRIES = 4096  # baselines kept read; past it the cache starts over
MAX_CLOCK_SKEW = 86400.0  # seconds a label record's timestamp may run ahead of this worker's clock


# One model's events from one partition, in offset order: runs of row events (with their event time) and columnar
# batches, each judged as it came.
EventRows = list[tuple[Event, float]] | ColumnarBatch


def _versions(piece: EventRows) -> set[str | None]:
    if isinstance(piece, ColumnarBatch):
        return {piece.model_version}
    return {event.model_version for event, _ in piece}


@dataclass(frozen=True, slots=True)
class Record:
    """The parts of a Kafka record the engine reads."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # Unix seconds (the record's timestamp)
    key: bytes | None
    value: bytes | None
    headers: Any = None  # (name, value) pairs or a mapping; a content-type header marks an Arrow message


@dataclass
class Outputs:
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)  # key, value
    dlq: list[tuple[bytes | None, bytes, Headers]] = field(default_factory=list)
    metrics: list[tuple[bytes, bytes]] = field(default_factory=list)
    alert_objects: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # the reason of each DLQ message
    # Retraining requests: key, wire (its since.offsets not filled in yet), since (event time, Unix seconds)
    requests: list[tuple[bytes, dict[str, Any], float]] = field(default_factory=list)


@dataclass
class PartitionState:
    offset: int = -1  # last offset applied to the monitors
    monitors: dict[str, ModelMonitor] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    offset_dirty: bool = False
    write: Write = Write.FORWARD  # how the next checkpoint may change the stored state
    stored: int | None = None  # the offset the store holds, as far as this worker knows
    offset_timestamp: int | None = None  # Kafka timestamp (ms) of the record at ``offset``
    last_seen: int = -1  # highest offset read since this state was loaded
    labels: dict[str, ModelLabels] = field(default_factory=dict)  # a labels partition's models
    retried: float = -math.inf  # monotonic time its waiting labels were last looked up
    policies: dict[str, RetrainPolicy] = field(default_factory=dict)  # an alert partition's models
    loaded_at: float = -math.inf  # the engine clock's time this state was loaded (freshness counts from it)

    @property
    def models(self) -> set[str]:
        """The models it holds state of (in one partition, of one kind: the topic's)."""
        return {*self.monitors, *self.labels, *self.policies}

    def snapshot_of(self, model: str) -> dict[str, Any]:
        monitor = self.monitors.get(model)
        if monitor is not None:
            return monitor.snapshot()
        labels = self.labels.get(model)
        return labels.snapshot() if labels is not None else self.policies[model].snapshot()


@dataclass
class LabelGroup:
    """One batch's labels of one model in one labels partition, with what the join store said."""

    labels: list[tuple[Label, str, float]] = field(default_factory=list)  # label, source, record time (s)
    found: list[Lookup | None] = field(default_factory=list)  # per label; None: its event id already waits here
    retried: list[tuple[str, Lookup]] = field(default_factory=list)  # waiting labels looked up again
    coverage: float | None = None  # share of the model's stored predictions that were ever labeled
    references: dict[str | None, QualityReference] = field(default_factory=dict)  # from baselines
    retry: bool = False  # look up the model's waiting labels too


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        joins: JoinStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        if joins is None:  # predictions wait for their labels where the state lives
            if isinstance(store, RedisStateStore):
                joins = RedisJoinStore(store.client, settings.state_prefix, settings.app_id, settings.label_ttl)
            elif isinstance(store, MemoryStateStore):
                joins = store.joins = store.joins or MemoryJoinStore(settings.label_ttl)
            else:
                raise TypeError(f"no join store for a {type(store).__name__}: pass joins=")
        self.joins = joins
        self.metrics = metrics
        self.clock = clock
        self._configs: dict[str, MonitorConfig] = {}  # per model: its budget may be its own
        # Join data of the events applied since the last checkpoint, per model: stored by the next one.
        self._unstored: dict[str, list[tuple[str, bytes]]] = {}
        self._storing: asyncio.Future[None] | None = None  # the task storing them
        self.limits = Limits(
            max_message_bytes=settings.max_message_bytes,
            max_events_per_message=settings.max_events_per_message,
            max_name_length=settings.max_name_length,
            max_string_length=settings.max_string_length,
        )
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        # Partitions whose stored layout is newer than this release knows (a rollback): their
        # state is left untouched, their records are not applied, and the worker is not ready.
        self.blocked: dict[tuple[str, int], int] = {}
        # Baselines read from the store: a model's references, and a version's (model, version).
        self._baselines: dict[tuple[str, str | None], dict[str, Reference]] = {}
        self._quality_baselines: dict[tuple[str, str | None], QualityReference] = {}  # reference quality
        self._baseline_generation: int | None = None
        self._baseline_polled = -math.inf
        self.retrain = settings.retrain_config()

    # -- state -------------------------------------------------------------

    def config(self, model: str) -> MonitorConfig:
        key = model if model in self.settings.models else ""  # the models the file names have their own
        config = self._configs.get(key)
        if config is None:
            config = self._configs[key] = self.settings.monitor_config(key or None)
        return config

    @property
    def model_count(self) -> int:
        return sum(len(state.models) for state in self.partitions.values())

    def quality_monitor(self, model: str, data: dict[str, Any] | None = None,
                        references: dict[str | None, QualityReference] | None = None) -> QualityMonitor:  # fmt: skip
        """A new quality monitor of ``model``, or one restored from ``data``; ``references``: its baselines'."""
        config, spec = self.config(model), self.settings.quality_spec(model)
        segments = self.settings.segment_specs(model)
        if data is None:
            return QualityMonitor(model, config, spec, segments=segments, references=references)
        return QualityMonitor.restore(data, config, spec, segments=segments, references=references)

    async def _partition(self, topic: str, partition: int) -> PartitionState:
        state = self.partitions.get((topic, partition))
        if state is None and (topic, partition) in self.blocked:
            return PartitionState()  # a newer layout's: not loaded again for every batch
        return state if state is not None else await self.load(topic, partition)

    async def load(self, topic: str, partition: int) -> PartitionState:
        """(Re)load a partition's state from the store, replacing what memory held."""
        state = PartitionState(loaded_at=self.clock())
        key = (topic, partition)
        checkpoint = await self.store.load(topic, partition)
        if checkpoint is not None and isinstance(checkpoint.version, int) and checkpoint.version > STATE_VERSION:
            # Written by a newer release (this is a rollback): never overwrite it. The partition's
            # records are not applied (nor acked) and the worker reports not ready until an upgrade.
            if key not in self.blocked:
                self.metrics.state_restore_failures.inc()
                log.error("state of %s[%d] has layout version %d, newer than this release's %d; leaving it "
                          "untouched and not applying that partition (upgrade driftstream)", topic, partition,
                          checkpoint.version, STATE_VERSION)  # fmt: skip
            self.blocked[key] = checkpoint.version
            self.partitions.pop(key, None)
            self.metrics.partitions_blocked.set(len(self.blocked))
            return state
        self.blocked.pop(key, None)
        self.metrics.partitions_blocked.set(len(self.blocked))
        if checkpoint is not None and checkpoint.version not in LAYOUTS_READ:
            # Unknown layout: nothing in it can be trusted, so the whole partition starts fresh.
            self.metrics.state_restore_failures.inc()
            log.warning("state of %s[%d] has layout version %r, not %d; starting that partition fresh",
                        topic, partition, checkpoint.version, STATE_VERSION)  # fmt: skip
            state.write = Write.REPLACE
            checkpoint = None
        if checkpoint is not None:
            state.offset = state.stored = checkpoint.offset
            state.offset_timestamp = checkpoint.offset_timestamp
            for model, blob in checkpoint.models.items():
                try:
                    if topic == self.settings.topic_alerts:
                        state.policies[model] = RetrainPolicy.restore(decode(blob), self.retrain)
                        continue
                    if topic == self.settings.topic_labels:
                        data = decode(blob)
                        if not isinstance(data, dict) or not isinstance(data.get("quality"), dict):
                            raise SnapshotError(f"labels snapshot of model {model!r} has no quality state")
                        versions = [version for version, _ in data["quality"].get("versions", [])]
                        known = await self._quality_references(model, versions)
                        quality = self.quality_monitor(model, data["quality"], known or None)
                        state.labels[model] = ModelLabels.restore(data, quality)
                        continue
                    data = upgrade_snapshot(decode(blob))
                    versions = [version for version, _ in data["versions"]]
                    references, by_version = await self._baselines_of(model, versions)
                    state.monitors[model] = ModelMonitor.restore(
                        data, self.config(model), self.settings.feature_kinds(model), references,
                        segments=self.settings.segment_specs(model), version_baselines=by_version,
                        constraints=self.settings.constraints(model),
                    )
                except (SnapshotError, ValueError, TypeError, OverflowError, AttributeError, KeyError) as exc:
                    # An unreadable snapshot costs that model its history, never the worker.
                    self.metrics.state_restore_failures.inc()
                    log.warning("state of model %r in %s[%d] not restored (%s); starting fresh",
                                model, topic, partition, exc)  # fmt: skip
            if checkpoint.version != STATE_VERSION:
                # Migrated from an older layout: the next checkpoint writes it all in the current one.
                log.info("migrating the state of %s[%d] from layout %s to %d", topic, partition, checkpoint.version,
                         STATE_VERSION)  # fmt: skip
                state.write, state.dirty = Write.REPLACE, state.models
            log.info("restored %s[%d] at offset %d with %d model(s)", topic, partition, state.offset,
                     len(state.models))  # fmt: skip
        self.partitions[key] = state
        self.metrics.models_tracked.set(self.model_count)
        return state

    def start_at_end(self, topic: str, partition: int, end: int) -> None:
        """A partition that has neither state nor a committed offset starts at its log's ``end``: the
        records before it are read and skipped (the retrain policy's alert topic, first read: an
        upgrade must not request retraining for the alerts of the past)."""
        state = self.partitions[(topic, partition)]
        if state.offset < 0 < end:
            state.offset, state.offset_timestamp, state.offset_dirty = end - 1, None, True
            log.info("%s[%d] read for the first time: starting at its end, offset %d", topic, partition, end)

    def restart_offsets(self, topic: str, partition: int, evidence: str) -> None:
        """The partition's log started over: keep the detectors, apply the new log from its start."""
        state = self.partitions[(topic, partition)]
        self._log_restarted(topic, partition, state, evidence)
        state.offset, state.offset_timestamp = -1, None

    def _log_restarted(self, topic: str, partition: int, state: PartitionState, evidence: str) -> None:
        self.metrics.offset_resets.inc()
        log.warning("offsets of %s[%d] restarted (%s, state covers up to %d); keeping detector state",
                    topic, partition, evidence, state.offset)  # fmt: skip
        state.write = Write.RESET
        state.offset_dirty = True

    async def _baseline(self, model: str, version: str | None = None) -> dict[str, Reference]:
        """The references of a model's baseline, or of one version's; {} when none is loaded."""
        cached = self._baselines.get((model, version))
        if cached is not None:
            return cached
        if self._baseline_generation is None:
            # Noted before the first read: a baseline loaded after it moves the generation, and the
            # next poll re-reads what this worker tracks.
            self._baseline_generation = await self.store.baseline_generation()
        references: dict[str, Reference] = {}
        quality: QualityReference | None = None
        blob = await self.store.load_baseline(model, version)
        if blob is not None:
            try:
                data = decode(blob)
                if data.get("v") != BASELINE_VERSION:
                    raise SnapshotError(f"baseline version {data.get('v')!r} is not {BASELINE_VERSION}")
                references = {name: reference_from_plain(ref) for name, ref in data["features"].items()}
                if data.get("quality") is not None:
                    quality = QualityReference.from_plain(data["quality"])
            except (SnapshotError, ValueError, TypeError, KeyError, AttributeError) as exc:
                self.metrics.state_restore_failures.inc()
                log.warning("baseline of model %r%s unreadable (%s); using the stream's first values", model,
                            "" if version is None else f" version {version!r}", exc)  # fmt: skip
        # Misses are remembered too (every labels batch asks for its versions'); the cache is bounded.
        if len(self._baselines) >= BASELINE_CACHE_ENTRIES:
            self._baselines.clear()
            self._quality_baselines.clear()
        self._baselines[(model, version)] = references
        if quality is not None:
            self._quality_baselines[(model, version)] = quality
        return references

    async def _quality_references(self, model: str, versions: Iterable[str | None]
                                  ) -> dict[str | None, QualityReference]:  # fmt: skip
        """The reference quality of a model's baseline (under None) and of these versions' that have one."""
        found: dict[str | None, QualityReference] = {}
        for version in (None, *(v for v in versions if v is not None)):
            await self._baseline(model, version)
            reference = self._quality_baselines.get((model, version))
            if reference is not None:
                found[version] = reference
        return found

    async def _baselines_of(self, model: str, versions: Iterable[str | None]) -> tuple[dict[str, Reference],
                                                                                       dict[str, Reference]]:
        """A model's baseline, and the prediction reference of each of these versions that has one."""
        by_version: dict[str, Reference] = {}
        for version in versions:
            if isinstance(version, str):
                reference = (await self._baseline(model, version)).get(PREDICTION)
                if reference is not None:
                    by_version[version] = reference
        return await self._baseline(model), by_version

    async def _poll_baselines(self) -> None:
        """Re-read the baselines of tracked models when one was loaded since the last look."""
        now = time.monotonic()
        if now - self._baseline_polled < BASELINE_POLL_SECONDS:
            return
        self._baseline_polled = now
        generation = await self.store.baseline_generation()
        if generation == self._baseline_generation:
            return
        # Every read first, then every change: a store that fails midway leaves nothing changed
        # (and the generation unrecorded, so the next poll tries again).
        self._baselines.clear()
        self._quality_baselines.clear()
        loaded = [(state, model, monitor, await self._baselines_of(model, list(monitor.versions)))
                  for state in self.partitions.values() for model, monitor in state.monitors.items()]  # fmt: skip
        quality = [(state, model, labels, await self._quality_references(model, list(labels.quality.versions)))
                   for state in self.partitions.values() for model, labels in state.labels.items()]  # fmt: skip
        self._baseline_generation = generation
        for state, model, monitor, (references, by_version) in loaded:
            changed = monitor.rebase(references, by_version)
            if changed:
                state.dirty.add(model)
                log.info("model %r: new baseline for %s, judged from the next window on", model,
                         ", ".join(changed))  # fmt: skip
        for state, model, labels, quality_references in quality:
            changed = labels.quality.rebase(quality_references)
            if changed:
                state.dirty.add(model)
                log.info("model %r: new reference quality for %s, judged from the next window on", model,
                         ", ".join(changed))  # fmt: skip

    async def checkpoint(self) -> int:
        """Write every changed partition to the store; the number written.

        Raises ``StoreUnavailable``; partitions saved before the failure (groups of
        ``CHECKPOINT_GROUP_BYTES``) are marked saved, the rest unchanged. A partition the store
        refused (a newer owner saved a later offset) is dropped from memory: its
        next record reloads the newer state. A partition whose key is not what this
        worker last saw (writes lost, or another writer) is rewritten whole.
        """
        started = time.perf_counter()
        await self._stored()
        changed = [key for key, state in self.partitions.items()
                   if state.dirty or state.offset_dirty or state.write is not Write.FORWARD]  # fmt: skip
        result = await self._save(changed)
        if result.diverged:
            for checkpoint in result.diverged:
                self.metrics.checkpoint_conflicts.labels("diverged").inc()
                log.warning("%s[%d]: the stored offset is not the %s this worker saw; rewriting the whole partition",
                            checkpoint.topic, checkpoint.partition, checkpoint.expected)  # fmt: skip
                state = self.partitions[(checkpoint.topic, checkpoint.partition)]
                state.write, state.dirty = Write.REPLACE, state.models
            again = await self._save([(c.topic, c.partition) for c in result.diverged])
            result.refused += again.refused
            result.newer += again.newer
            result.written += again.written
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        for checkpoint in result.newer:
            # A newer release wrote this partition after this worker loaded it: never overwrite it.
            key = (checkpoint.topic, checkpoint.partition)
            self.partitions.pop(key, None)
            self.blocked[key] = checkpoint.version or STATE_VERSION + 1
            self.metrics.partitions_blocked.set(len(self.blocked))
            log.error("%s[%d]: a newer release (layout %s) wrote this partition's state; leaving it untouched and "
                      "not applying that partition (upgrade driftstream)", *key, checkpoint.version)  # fmt: skip
        for checkpoint in result.refused:
            self.metrics.checkpoint_conflicts.labels("newer_owner").inc()
            log.warning("%s[%d]: the store holds a later offset than %d (another worker owned it); reloading",
                        checkpoint.topic, checkpoint.partition, checkpoint.offset)  # fmt: skip
        self.forget((c.topic, c.partition) for c in result.refused)
        return result.written

    async def _save(self, keys: list[tuple[str, int]]) -> SaveResult:
        """Save partitions in groups of about ``CHECKPOINT_GROUP_BYTES`` of snapshots, so a checkpoint
        holds one group's encoded bytes at a time (a model collecting its reference saves every value)."""
        result, group, size = SaveResult(), [], 0
        for topic, partition in keys:
            state = self.partitions[(topic, partition)]
            models = {model: encode(state.snapshot_of(model)) for model in sorted(state.dirty)}
            group.append(Checkpoint(topic, partition, state.offset, models, offset_timestamp=state.offset_timestamp,
                                    write=state.write, expected=state.stored))  # fmt: skip
            size += sum(map(len, models.values()))
            if size >= CHECKPOINT_GROUP_BYTES:
                await self._save_group(group, result)
                group, size = [], 0
        if group:
            await self._save_group(group, result)
        return result

    async def _save_group(self, checkpoints: list[Checkpoint], total: SaveResult) -> None:
        result = await self.store.save(checkpoints)
        for checkpoint in result.refused + result.diverged + result.newer:
            checkpoint.models = {}  # only where they stand is read from here on: free the snapshots now
        total.refused += result.refused
        total.diverged += result.diverged
        total.newer += result.newer
        total.written += result.written
        rejected = {id(c) for c in result.refused + result.diverged + result.newer}
        for checkpoint in checkpoints:
            if id(checkpoint) not in rejected:
                state = self.partitions[(checkpoint.topic, checkpoint.partition)]
                state.dirty.clear()
                state.offset_dirty = False
                state.write = Write.FORWARD
                state.stored = checkpoint.offset

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop the in-memory state of partitions this worker no longer owns."""
        for key in partitions:
            self.partitions.pop(key, None)
            self.blocked.pop(key, None)
        self.metrics.models_tracked.set(self.model_count)
        self.metrics.partitions_blocked.set(len(self.blocked))

    # -- the hot path ------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> Outputs:
        started = time.perf_counter()
        # All store reads happen first: once state starts changing, nothing awaits, so a
        # cancelled batch leaves no partition with an offset ahead of its monitors.
        for topic, partition in dict.fromkeys((r.topic, r.partition) for r in records):
            await self._partition(topic, partition)
        await self._poll_baselines()
        if self.blocked:
            records = [r for r in records if (r.topic, r.partition) not in self.blocked]
        out = Outputs()
        groups: dict[tuple[str, int, str], list[EventRows]] = defaultdict(list)
        label_groups: dict[tuple[str, int, str], LabelGroup] = defaultdict(LabelGroup)
        admitted: set[str] = set()  # models new to this worker, let in by this batch
        applied = {key: state.offset for key, state in self.partitions.items()}
        seen = {key: state.last_seen for key, state in self.partitions.items()}
        stamps: dict[tuple[str, int], int] = {}  # Kafka timestamp (ms) of each partition's last applied record
        restarted: dict[tuple[str, int], int] = {}
        labels_topic, alerts_topic = self.settings.topic_labels, self.settings.topic_alerts
        label_messages = alert_messages = 0
        alert_groups: dict[tuple[str, int, str], list[SeenAlert]] = defaultdict(list)
        unjoinable: dict[str, int] = defaultdict(int)  # labels while LABEL_TTL is 0, per model
        for record in records:
            key = (record.topic, record.partition)
            state = self.partitions[key]
            if record.offset <= seen[key]:
                # Kafka never hands out an offset twice between two loads of a partition
                # (the worker reloads on every assignment): its log started over.
                restarted[key] = record.offset
                applied[key] = record.offset - 1
            seen[key] = record.offset
            if record.offset <= applied[key]:
                continue  # already applied (before the last checkpoint, or earlier in this batch)
            applied[key] = record.offset
            stamps[key] = round(record.timestamp * 1000)
            if record.topic == alerts_topic:
                alert_messages += 1
                self._read_alert(record, state, alert_groups, out)
                continue
            if record.topic == labels_topic:
                label_messages += 1
                labels, rejections = decode_labels(record.value, self.limits)
                for rejection in rejections:
                    self._reject(record, rejection, out)
                if not self.settings.label_ttl:  # no join data is stored: nothing to join them to
                    for label in labels:
                        unjoinable[label.model] += 1
                    continue
                for position, label in enumerate(labels):
                    if label.model not in state.labels and not self._admit(record, label, admitted, out):
                        continue
                    source = f"{record.partition}:{record.offset}:{position}"
                    label_groups[(record.topic, record.partition, label.model)].labels.append(
                        (label, source, record.timestamp))
                continue
            try:
                events, block, rejections = decode_events(record.value, record.headers, self.limits)
            except Exception as exc:  # noqa: BLE001 - a decoder's bug must cost its message, not the worker
                log.exception("%s[%d]@%d: the message could not be decoded", record.topic, record.partition,
                              record.offset)  # fmt: skip
                reason = "invalid_arrow" if record.value is not None and is_arrow(record.value, record.headers) else \
                    "invalid_json"  # fmt: skip
                events, block, rejections = [], None, [Rejection(reason, f"not decodable: {exc!r}"[:500], None)]
            if block is not None and block.model not in state.monitors and not self._admit(record, block, admitted,
                                                                                           out):  # fmt: skip
                # The whole message went to the DLQ, its bad rows with it; counted per row, as an envelope's.
                out.rejected += ["too_many_models"] * (len(block) + len(rejections) - 1)
                continue
            for rejection in rejections:
                self._reject(record, rejection, out)
            if block is not None:
                times = block.batch.timestamps
                times[np.isnan(times)] = record.timestamp
                groups[(record.topic, record.partition, block.model)].append(block)
                continue
            for event in events:
                if event.model not in state.monitors and not self._admit(record, event, admitted, out):
                    continue
                rows = groups[(record.topic, record.partition, event.model)]
                if not rows or type(rows[-1]) is not list:
                    rows.append([])
                rows[-1].append((event, record.timestamp if event.timestamp is None else event.timestamp))  # type: ignore[union-attr]
        # Baselines of new models and of versions new to a model, read before any state changes.
        baselines: dict[str, dict[str, Reference]] = {}
        version_baselines: dict[str, dict[str, Reference]] = {}
        for (topic, partition, model), rows in groups.items():
            monitor = self.partitions[(topic, partition)].monitors.get(model)
            versions = {version for piece in rows for version in _versions(piece)}
            if monitor is None:
                baselines[model] = await self._baseline(model)
            else:
                versions -= monitor.versions.keys()
            if versions:
                _, by_version = await self._baselines_of(model, versions)
                version_baselines.setdefault(model, {}).update(by_version)
        # The join store: what labels will need of these events, and what it holds for these labels.
        # Both are safe to repeat (a replay stores nothing new and finds its own labels' marks).
        joins = self._join_data(groups)
        due = self._due_retries(label_groups)
        await self._look_up(label_groups)
        for key, offset in restarted.items():
            self._log_restarted(*key, self.partitions[key], f"offset {offset} read again")
        for key, offset in applied.items():
            state = self.partitions[key]
            state.last_seen = seen[key]
            if offset != state.offset:
                state.offset = offset
                state.offset_timestamp = stamps.get(key)
                state.offset_dirty = True
        for model, entries in joins.items():  # stored in the background, at the latest by the next checkpoint
            self._unstored.setdefault(model, []).extend(entries)
        self._store_in_background()
        for (topic, partition, model), rows in groups.items():
            self._observe(topic, partition, model, rows, baselines, version_baselines.get(model, {}), out)
        for key in due:
            self.partitions[key].retried = time.monotonic()
        for (topic, partition, model), group in label_groups.items():
            self._apply_labels(topic, partition, model, group, out)
        for (topic, partition, model), alerts in alert_groups.items():
            self._apply_alerts(topic, partition, model, alerts, out)
        for model, count in unjoinable.items():
            self.metrics.labels.labels(model, "unmatched").inc(count)
        for reason in out.rejected:
            self.metrics.events_rejected.labels(reason).inc()
        self.metrics.messages_consumed.inc(len(records) - label_messages - alert_messages)
        self.metrics.label_messages_consumed.inc(label_messages)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_messages.observe(len(records))
        return out

    async def retry_waiting(self, every: bool = False) -> Outputs:
        """Look up again the labels waiting for their predictions (in partitions due, or in every one:
        a replay's last look once all join data is stored); apply what joined."""
        groups: dict[tuple[str, int, str], LabelGroup] = {}
        due = self._due_retries(groups, every)
        out = Outputs()
        await self._look_up(groups)
        for key in due:
            self.partitions[key].retried = time.monotonic()
        for (topic, partition, model), group in groups.items():
            self._apply_labels(topic, partition, model, group, out)
        return out

    def _due_retries(self, groups: dict[tuple[str, int, str], LabelGroup], every: bool = False
                     ) -> list[tuple[str, int]]:  # fmt: skip
        """Labels partitions whose waiting labels are due for a lookup (``every``: all of them): every model
        of theirs with waiting labels gets ``retry`` in ``groups`` (so a busy model never starves a quiet one)."""
        now = time.monotonic()
        due = [key for key, state in self.partitions.items()
               if any(labels.waiting for labels in state.labels.values())
               and (every or now - state.retried >= self.settings.label_retry_interval)]  # fmt: skip
        for topic, partition in due:
            for model, labels in self.partitions[(topic, partition)].labels.items():
                if labels.waiting:
                    groups.setdefault((topic, partition, model), LabelGroup()).retry = True
        return due

    # -- the join --------------------------------------------------------------

    def _join_data(self, groups: dict[tuple[str, int, str], list[EventRows]]) -> dict[str, list[tuple[str, bytes]]]:
        """What a later label needs of each event with an id, per model (all its partitions together)."""
        if not self.settings.label_ttl:
            return {}
        found: dict[str, list[tuple[str, bytes]]] = {}
        for (_, _, model), pieces in groups.items():
            keys = {key for spec in self.settings.segment_specs(model) for key in spec}
            entries = found.setdefault(model, [])
            for piece in pieces:
                if isinstance(piece, ColumnarBatch):
                    entries += _columnar_join_data(piece, keys)
                    continue
                for event, at in piece:
                    if event.event_id is not None:
                        _add_join_entry(entries, event.event_id, event.model_version, event.segment, keys,
                                        event.prediction, event.probabilities, at)  # fmt: skip
        return {model: entries for model, entries in found.items() if entries}

    async def _flush_joins(self) -> None:
        """Store the join data of the events applied so far (one task at a time, in the background).

        Not part of the batch: Redis runs the store script while the worker decodes the next
        batch, and a Redis outage stops the checkpoint (which awaits this first), not the
        detectors. A checkpoint covers its events' join data, so a crash before it replays them
        (storing is idempotent: the first write of an event id stands).
        """
        while self._unstored:
            model = next(iter(self._unstored))
            entries = self._unstored.pop(model)
            try:
                new = await self.joins.store(model, entries, self.config(model).event_rate)
            except BaseException:
                self._unstored[model] = entries + self._unstored.get(model, [])  # stored again next time
                raise
            self.metrics.predictions_stored.labels(model).inc(new)

    def _store_in_background(self) -> None:
        """Start storing the join data not stored yet, unless a task is at it or the last one failed
        (what it could not store waits for the checkpoint, which reports the outage)."""
        storing = self._storing
        if not self._unstored or (storing is not None and not storing.done()):
            return
        if storing is not None and (storing.cancelled() or storing.exception() is not None):
            return
        self._storing = asyncio.ensure_future(self._flush_joins())

    async def close(self) -> None:
        """Stop storing join data in the background (what it did not store stays unstored: the state
        covering those events was not checkpointed either), its outcome retrieved."""
        storing, self._storing = self._storing, None
        if storing is not None:
            storing.cancel()
            await asyncio.wait([storing])
            if not storing.cancelled():
                storing.exception()

    async def _stored(self) -> None:
        """Wait for the join data of every applied event to be stored (raises ``StoreUnavailable``)."""
        storing = self._storing
        if storing is not None:
            # Forgotten only once done: a checkpoint cancelled while it waits must not let the next
            # batch start a second store beside it (the first write of an event id must stand).
            await asyncio.wait([storing])
            self._storing = None
            if not storing.cancelled():
                storing.exception()  # retrieved: what it failed to store is in _unstored, stored now
        await self._flush_joins()

    async def _look_up(self, groups: dict[tuple[str, int, str], LabelGroup]) -> None:
        """Ask the join store about each group's labels and, with ``retry``, about its waiting ones."""
        for (topic, partition, model), group in groups.items():
            state = self.partitions[(topic, partition)]
            waiting = state.labels[model].waiting if model in state.labels else {}
            asked: list[tuple[str, bytes]] = []
            if group.retry:
                asked = [(event_id, label.mark) for event_id, label in waiting.items()]
            fresh: list[int] = []
            for i, (label, source, _) in enumerate(group.labels):
                group.found.append(None)
                if label.event_id not in waiting:
                    fresh.append(i)
                    asked.append((label.event_id, mark(source, _label_bytes(label.label))))
            if not asked:
                continue
            found = await self.joins.lookup(model, asked)
            retried = len(asked) - len(fresh)
            group.retried = [(event_id, lookup) for (event_id, _), lookup in zip(asked[:retried], found[:retried],
                                                                                   strict=True)]  # fmt: skip
            for i, lookup in zip(fresh, found[retried:], strict=True):
                group.found[i] = lookup
            stored_count, joined_count = await self.joins.coverage(model)
            group.coverage = joined_count / stored_count if stored_count else None
            versions = {lookup.data.version for lookup in (*found,) if lookup.data is not None}
            group.references = await self._quality_references(model, versions)

    def _apply_labels(self, topic: str, partition: int, model: str, group: LabelGroup, out: Outputs) -> None:
        """Labels that joined go to the model's quality monitor; the rest wait or are counted."""
        state = self.partitions[(topic, partition)]
        host = state.labels.get(model)
        if host is None:
            host = state.labels[model] = ModelLabels(model, self.quality_monitor(model, None, group.references))
            self.metrics.models_tracked.set(self.model_count)
        elif any(host.quality.references.get(v) is not r for v, r in group.references.items()):
            host.quality.rebase(host.quality.references | group.references)  # a version new to it has a baseline
        if group.labels:
            # The model's clock: its label records' Kafka timestamps (checkpointed, so a replay expires
            # what the first run did), never more than a day past this worker's (a producer's clock
            # years ahead must not expire every waiting label at once).
            latest = min(max(at for _, _, at in group.labels), self.clock() + MAX_CLOCK_SKEW)
            host.clock = max(host.clock, latest)
        counts: dict[str, int] = defaultdict(int)
        joined: list[tuple[JoinData, Any, float]] = []  # join data, label, label time
        settled: dict[str, bytes] = {}  # waiting labels this group joined: a later one for the same event is not new
        for event_id, lookup in group.retried:  # waited longest: first
            waiting = host.waiting.get(event_id)
            if waiting is None or lookup.outcome is Outcome.MISSING:
                continue
            del host.waiting[event_id]
            settled[event_id] = _label_bytes(waiting.label)
            if lookup.data is not None:
                joined.append((lookup.data, waiting.label, waiting.label_time))
                counts["joined"] += 1
            else:
                counts["duplicate" if lookup.outcome is Outcome.DUPLICATE else "conflict"] += 1
        for (label, source, at), found in zip(group.labels, group.found, strict=True):
            label_time = at if label.timestamp is None else label.timestamp
            if found is None or found.outcome is Outcome.MISSING:
                waiting = host.waiting.get(label.event_id)
                first = _label_bytes(waiting.label) if waiting is not None else settled.get(label.event_id)
                if first is not None:  # a label came first for that prediction: it stands
                    counts["duplicate" if first == _label_bytes(label.label) else "conflict"] += 1
                    continue
                label_mark = mark(source, _label_bytes(label.label))
                counts["overflow"] += host.wait(label.event_id, WaitingLabel(label_mark, label.label, label_time, at),
                                                self.settings.label_wait_max)  # fmt: skip
                counts["waiting"] += 1
            elif found.data is not None:
                joined.append((found.data, label.label, label_time))
                counts["joined"] += 1
            else:
                counts["duplicate" if found.outcome is Outcome.DUPLICATE else "conflict"] += 1
        counts["unmatched"] += host.expire(host.clock, self.settings.label_ttl)
        if group.labels or any(counts.values()):  # a retry that found nothing changes nothing
            state.dirty.add(model)
        for outcome, count in counts.items():
            if count:
                self.metrics.labels.labels(model, outcome).inc(count)
        self.metrics.labels_waiting.labels(model).set(
            sum(len(s.labels[model].waiting) for s in self.partitions.values() if model in s.labels))
        if group.coverage is not None:
            self.metrics.label_coverage.labels(model).set(group.coverage)
        if not joined:
            return
        rows = LabeledRows(
            versions=[data.version for data, _, _ in joined],
            segments=[data.segment for data, _, _ in joined],
            predictions=[data.prediction for data, _, _ in joined],
            probabilities=[data.probabilities for data, _, _ in joined],
            labels=[label for _, label, _ in joined],
            event_times=np.fromiter((data.event_time for data, _, _ in joined), float, len(joined)),
            label_times=np.fromiter((at for _, _, at in joined), float, len(joined)),
        )
        observe_many(self.metrics.label_lag.labels(model), np.maximum(rows.label_times - rows.event_times, 0.0))
        observation = host.quality.observe(rows, group.coverage)
        for (version, segment, metric), value in observation.quality.items():
            self.metrics.quality.labels(model, version or "", segment, metric).set(value)
        for retired in observation.retired_versions:
            self.metrics.forget_version(model, retired or "", quality=True)
        self._publish(model, topic, partition, observation.alerts, None, out)
        if observation.windows_judged:
            snapshot = {
                "model": model,
                "partition": partition,
                "topic": topic,
                "labels_seen": host.quality.labels_seen,
                "at": self.clock(),
                "quality": [
                    {"version": version, "segment": segment or None, "metric": metric, "value": value}
                    for (version, segment, metric), value in observation.quality.items()
                ],
            }  # fmt: skip
            out.metrics.append((model.encode(), orjson.dumps(snapshot)))

    # -- retraining requests -------------------------------------------------

    def _read_alert(self, record: Record, state: PartitionState,
                    groups: dict[tuple[str, int, str], list[SeenAlert]], out: Outputs) -> None:  # fmt: skip
        """One message of the alert topic, for its model's retrain policy (a bad one goes to the DLQ)."""
        try:
            model, alert = read_alert(record.value)
        except Invalid as exc:
            self._reject(record, Rejection(exc.reason, exc.detail), out)
            return
        key = (record.topic, record.partition, model)
        if model not in state.policies and key not in groups:
            # Retrain policies are bounded apart from the models monitored: at most max_models on a worker.
            held = sum(len(s.policies) for s in self.partitions.values())
            new = sum(1 for t, p, m in groups if m not in self.partitions[(t, p)].policies)
            if held + new >= self.settings.max_models:
                detail = f"model {model[:100]!r} would exceed max_models={self.settings.max_models} retrain policies"
                self._reject(record, Rejection("too_many_models", detail), out)
                return
        groups[key].append(alert)

    def _apply_alerts(self, topic: str, partition: int, model: str, alerts: list[SeenAlert], out: Outputs) -> None:
        """A model's alerts to its retrain policy; the requests they trigger to the outputs."""
        state = self.partitions[(topic, partition)]
        policy = state.policies.get(model)
        if policy is None:
            policy = state.policies[model] = RetrainPolicy(model, self.retrain)
            self.metrics.models_tracked.set(self.model_count)
        state.dirty.add(model)
        for alert in alerts:
            decision = policy.observe(alert)
            if decision is None:
                continue
            outcome, request = decision
            self.metrics.retrain_requests.labels(model, outcome).inc()
            if outcome == "published":
                wire = retrain_wire(request, self.clock(), self.retrain.cooldown)
                out.requests.append((model.encode(), wire, request.since))
            else:
                log.info("model %r: retraining request for alert %s suppressed (cooldown %.0f s)", model,
                         alert.alert_id, self.retrain.cooldown)  # fmt: skip

    def _admit(self, record: Record, event: Event | Label | ColumnarBatch, admitted: set[str], out: Outputs) -> bool:
        """A new model gets a monitor only while the worker tracks fewer than max_models."""
        if event.model in admitted:
            return True
        known = {model for state in self.partitions.values() for model in (*state.monitors, *state.labels)}
        if event.model in known:
            return True
        if len(known) + len(admitted) >= self.settings.max_models:
            detail = f"model {event.model[:100]!r} would exceed max_models={self.settings.max_models}"
            element = (_event_json(event) if isinstance(event, Event) else
                       None if isinstance(event, ColumnarBatch) else _label_json(event))  # fmt: skip
            self._reject(record, Rejection("too_many_models", detail, None, element), out)
            return False
        admitted.add(event.model)
        return True

    def _observe(
        self,
        topic: str,
        partition: int,
        model: str,
        pieces: list[EventRows],
        baselines: dict[str, dict[str, Reference]],
        version_baselines: dict[str, Reference],
        out: Outputs,
    ) -> None:
        for piece in pieces:
            if isinstance(piece, ColumnarBatch):
                batch = piece.batch
            else:
                batch = _columns([event for event, _ in piece], np.fromiter((ts for _, ts in piece), float, len(piece)))
            self._observe_batch(topic, partition, model, batch, baselines, version_baselines, out)

    def _observe_batch(
        self,
        topic: str,
        partition: int,
        model: str,
        batch: ModelBatch,
        baselines: dict[str, dict[str, Reference]],
        version_baselines: dict[str, Reference],
        out: Outputs,
    ) -> None:
        state = self.partitions[(topic, partition)]
        monitor = state.monitors.get(model)
        if monitor is None:
            monitor = ModelMonitor(model, self.config(model), self.settings.feature_kinds(model), baselines.get(model),
                                   segments=self.settings.segment_specs(model),
                                   constraints=self.settings.constraints(model))  # fmt: skip
            state.monitors[model] = monitor
            self.metrics.models_tracked.set(self.model_count)
        monitor.version_baselines.update(version_baselines)
        now = self.clock()
        self._event_times(model, batch.timestamps, now)
        observation = monitor.observe(batch, arrived_at=now)
        state.dirty.add(model)
        self.metrics.events_consumed.labels(model).inc(len(batch))
        if observation.invalid_values:
            self.metrics.invalid_values.labels(model).inc(observation.invalid_values)
        if observation.ignored_features:
            self.metrics.ignored_features.labels(model).inc(observation.ignored_features)
        for segment, count in observation.segment_events.items():
            self.metrics.segment_events.labels(model, segment).inc(count)
        if observation.versions_retired:
            self.metrics.versions_retired.labels(model).inc(observation.versions_retired)
        if observation.statistics or observation.lines:
            self.metrics.set_drift(
                {(model, version or "", segment, feature or PREDICTION, detector): value
                 for (version, segment, feature, detector), value in observation.statistics.items()},
                {(model, version or "", segment, feature or PREDICTION, detector): line
                 for (version, segment, feature, detector), line in observation.lines.items()},
            )  # fmt: skip
        for retired in observation.retired_versions:  # the label stays bounded by max_versions
            self.metrics.forget_version(model, retired or "")
        key = model.encode()
        self._publish(model, topic, partition, observation.alerts, monitor.model_version, out)
        if observation.windows_judged:
            snapshot = {
                "model": model,
                "model_version": monitor.model_version,
                "partition": partition,
                "events_seen": monitor.events_seen,
                "at": now,
                "statistics": [
                    {"version": version, "segment": segment or None, "feature": feature, "detector": detector,
                     "value": value, "line": observation.lines.get((version, segment, feature, detector))}
                    for (version, segment, feature, detector), value in observation.statistics.items()
                ],
            }  # fmt: skip
            out.metrics.append((key, orjson.dumps(snapshot)))

    def _event_times(self, model: str, times: np.ndarray, now: float) -> None:
        """The lag of each event behind the worker's clock, and those stamped too far from it."""
        lag = now - times
        observe_many(self.metrics.event_lag.labels(model), lag)
        future = int((lag < -self.settings.event_time_future).sum())
        past = int((lag > self.settings.event_time_past).sum())
        if future:
            self.metrics.events_out_of_time.labels(model, "future").inc(future)
        if past:
            self.metrics.events_out_of_time.labels(model, "past").inc(past)

    def check_freshness(self, skip: Iterable[tuple[str, int]] = ()) -> Outputs:
        """Freshness alerts of the models silent for their STALE_AFTER (counted from no earlier than
        their partition's load: a worker catching up has not heard from them yet); ``skip``: partitions
        with messages not applied yet, whose models may be sending."""
        out = Outputs()
        now = self.clock()
        skipped = set(skip)
        for (topic, partition), state in self.partitions.items():
            if (topic, partition) in skipped:
                continue
            for model, monitor in state.monitors.items():
                alerts = monitor.check_freshness(now, state.loaded_at)
                if alerts:
                    state.dirty.add(model)
                    self._publish(model, topic, partition, alerts, monitor.model_version, out)
        return out

    def _publish(self, model: str, topic: str, partition: int, alerts: list[Alert], latest: str | None,
                 out: Outputs) -> None:  # fmt: skip
        """Alerts to the wire; those of input features name ``latest``, the model's latest version."""
        now = self.clock()
        key = model.encode()
        for alert in alerts:
            # Input features do not depend on the version: their alerts (and dataset drift's, which
            # counts theirs) name the latest one seen.
            version = latest if alert.feature is not None or alert.detector in _MODEL_DETECTORS else alert.version
            wire = to_wire(alert, model, version, topic, partition, now)
            out.alerts.append((key, orjson.dumps(wire)))
            out.alert_objects.append(wire)
            self.metrics.alerts.labels(model, alert.type, alert.severity, alert.status).inc()

    def _reject(self, record: Record, rejection: Rejection, out: Outputs) -> None:
        out.rejected.append(rejection.reason)
        headers: Headers = [
            ("driftstream-reason", rejection.reason.encode()),
            ("driftstream-detail", rejection.detail[:1000].encode()),
            ("driftstream-source-topic", record.topic.encode()),
            ("driftstream-source-partition", str(record.partition).encode()),
            ("driftstream-source-offset", str(record.offset).encode()),
        ]
        if rejection.index is None and rejection.element is None:
            value = record.value or b""
        else:
            # One element of a batch envelope: the element alone, re-encoded.
            if rejection.index is not None:
                headers.append(("driftstream-batch-index", str(rejection.index).encode()))
            value = orjson.dumps(rejection.element, option=orjson.OPT_PASSTHROUGH_DATACLASS, default=str)
        if len(value) > self.settings.dlq_max_value_bytes:
            # Brokers cap message size (1 MB by default); the source headers locate the whole message.
            headers.append(("driftstream-truncated-from", str(len(value)).encode()))
            value = value[: self.settings.dlq_max_value_bytes]
        out.dlq.append((record.key, value, headers))


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "model": event.model,
        "model_version": event.model_version,
        "event_id": event.event_id,
        "timestamp": event.timestamp,
        "features": event.features,
        "prediction": event.prediction,
        "segment": event.segment,
    }


def _label_json(label: Label) -> dict[str, Any]:
    return {"model": label.model, "event_id": label.event_id, "label": label.label, "timestamp": label.timestamp}


def _label_bytes(label: Any) -> bytes:
    """A label as compared with another for the same prediction: its msgpack (1 and 1.0 differ, as sent)."""
    return msgpack.packb(label)


def _columnar_join_data(block: ColumnarBatch, keys: set[str]) -> list[tuple[str, bytes]]:
    """The join data of a columnar batch's rows with an event id (as ``_join_data`` stores a row event's)."""
    batch = block.batch
    ids = batch.event_ids
    if ids is None or all(event_id is None for event_id in ids):
        return []
    probabilities = batch.probabilities or [None] * len(batch)
    segments = batch.segments or [None] * len(batch)
    if (not keys or batch.segments is None) and not any(probabilities) and (
            batch.prediction is None or block.float_predictions is not None):  # fmt: skip
        values = stored_float_values(block.model_version, block.float_predictions, batch.timestamps)
        return [(event_id, value) for event_id, value in zip(ids, values, strict=True) if event_id is not None]
    predictions = block.prediction_values()
    entries: list[tuple[str, bytes]] = []
    for row, (event_id, at) in enumerate(zip(ids, batch.timestamps.tolist(), strict=True)):
        if event_id is not None:
            _add_join_entry(entries, event_id, block.model_version, segments[row], keys, predictions[row],
                            probabilities[row], at)  # fmt: skip
    return entries


def _add_join_entry(entries: list[tuple[str, bytes]], event_id: str, version: str | None,
                    segment: dict[str, Any] | None, keys: set[str], prediction: Any,
                    probabilities: dict[str, float] | None, at: float) -> None:  # fmt: skip
    """What a later label needs of one event (its segment cut to the keys the model slices by), unless too
    large to store: the one recipe of row events and columnar rows."""
    if keys and segment:
        segment = {key: value for key, value in segment.items() if key in keys} or None
    else:
        segment = None
    value = stored_value(JoinData(version, segment, prediction, probabilities, at))
    if value is not None:
        entries.append((event_id, value))


def _columns(events: list[Event], timestamps: np.ndarray) -> ModelBatch:
    """Row events to typed feature columns (missing where an event lacks a feature) and per-row fields."""
    n = len(events)
    columns: dict[str, list[Any]] = {}
    predictions: list[Any] | None = None
    for i, event in enumerate(events):
        for name, value in event.features.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * n
            column[i] = value
        if event.prediction is not None:
            if predictions is None:
                predictions = [None] * n
            predictions[i] = event.prediction
    versions = [event.model_version for event in events]
    segments = [event.segment for event in events]
    return ModelBatch(
        {name: Column.from_values(values) for name, values in columns.items()},
        timestamps,
        prediction=None if predictions is None else Column.from_values(predictions),
        versions=versions if any(v is not None for v in versions) else None,
        segments=segments if any(s is not None for s in segments) else None,
        event_ids=[event.event_id for event in events],
        probabilities=[event.probabilities for event in events],
    )
