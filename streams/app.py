"""The Faust worker: consumes inference events and labels in batches, publishes alerts.

Faust's per-message cost is fixed, so all real work happens per batch in
``streams.engine.Engine``; this module moves records in and results out, and
decides when Kafka may learn that a message is done.

Exactly-once state: a message is acked to Faust (and so may be committed to
Kafka) only after a checkpoint covering it is in the state store and the alerts
it caused are flushed to the broker. A crash anywhere replays from the last
committed offset, and the engine skips what the checkpoint already covers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import faust
import orjson
from faust.types import TP, EventT
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from streams.engine import Engine, Outputs, Record
from streams.kafka import (
    broker_connected,
    committed_offsets,
    end_offsets,
    faust_credentials,
    log_holds,
    offsets_since,
)
from streams.metrics import Metrics
from streams.redis_client import access_denied, redis_problem
from streams.settings import Settings
from streams.state import StateStore, StoreUnavailable

log = logging.getLogger(__name__)
EXIT_CONFIG = 78  # sysexits EX_CONFIG: the worker stopped on a setting only a person can fix


class Worker:
    """A Faust app wired to one Engine, its state store and its metrics registry."""

    def __init__(self, settings: Settings, store: StateStore, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.engine = Engine(settings, store, self.metrics)
        self._lock = asyncio.Lock()  # one of: a batch, a checkpoint, a rebalance step
        self._last_checkpoint = time.monotonic()
        self._store_ok = True
        self._broker_ok: bool | None = None  # None until the first check: startup is no change to log
        # Processed events not yet covered by a checkpoint, acked only once they are.
        self._unsaved: dict[TP, list[EventT]] = defaultdict(list)
        self._unsaved_count = 0
        self._unsaved_bytes = 0
        self._sent: list[Awaitable[Any]] = []  # outputs queued since the last checkpoint
        self._stream: faust.StreamT | None = None
        # Models of the partitions revoked by the rebalance under way: their metrics go once the
        # new assignment shows which of them this worker no longer holds.
        self._released: dict[tuple[str, int], set[str]] = {}
        # Set once the partitions of the current assignment are loaded (Faust may resume
        # fetching before its assignment signal handlers finish).
        self._settled = asyncio.Event()
        self.app = self._build_app()

    def _build_app(self) -> faust.App:
        s = self.settings
        app = faust.App(
            s.app_id,
            broker=[f"kafka://{server}" for server in s.kafka_bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(s),
            value_serializer="raw",
            key_serializer="raw",
            web_host=s.web_host,
            web_port=s.web_port,
            datadir=s.data_dir or tempfile.mkdtemp(prefix="driftstream-"),
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=s.broker_session_timeout,
            broker_rebalance_timeout=s.broker_rebalance_timeout,
            broker_heartbeat_interval=s.broker_heartbeat_interval,
            topic_partitions=s.topic_partitions,
            topic_replication_factor=s.topic_replication,
            topic_allow_declare=False,
            # Faust fetches ahead up to this many messages: with batch_max, what bounds message memory.
            # Not below 16: Faust pauses a partition at maxsize / 1.25 queued and its fetcher sleeps
            # a second when every partition is paused, which a buffer of 2 or 4 makes the rule.
            stream_buffer_maxsize=max(16, 2 * s.batch_max),
            # Unacked events wait for a checkpoint; a rebalance must not wait for them to be acked.
            stream_wait_empty=False,
            consumer_max_fetch_size=max(1024 * 1024, s.max_message_bytes + 64 * 1024),
            producer_max_request_size=max(1024 * 1024, s.dlq_max_value_bytes + 64 * 1024),
        )
        # One agent reads events and labels: a batch applies both, and one checkpoint covers both.
        # With retraining requests on, the alert topic too: the retrain policy reads the alerts back.
        inputs = (s.topic_events, s.topic_labels, *((s.topic_alerts,) if s.retrain_on else ()))
        events = app.topic(*inputs, value_serializer="raw", key_serializer="raw")
        alerts = app.topic(s.topic_alerts, value_serializer="raw", key_serializer="raw")
        dlq = app.topic(s.topic_dlq, value_serializer="raw", key_serializer="raw")
        statistics = app.topic(s.topic_metrics, value_serializer="raw", key_serializer="raw")
        retrain = app.topic(s.topic_retrain, value_serializer="raw", key_serializer="raw")

        async def publish(out: Outputs) -> list[Awaitable[Any]]:
            """Queue a batch's outputs; the futures tell, once flushed, whether each was delivered."""
            sent = [await alerts.send(key=key, value=value) for key, value in out.alerts]
            sent += [await dlq.send(key=key, value=value, headers=headers) for key, value, headers in out.dlq]
            sent += [await statistics.send(key=key, value=value) for key, value in out.metrics]
            for key, request, since in out.requests:
                request["since"]["offsets"] = await self._offsets_since(since)
                sent.append(await retrain.send(key=key, value=orjson.dumps(request)))
                log.warning("retraining requested: %s", request["reason"])
            return sent

        @app.agent(events, name="driftstream-monitor")
        async def monitor(stream: faust.StreamT) -> None:
            self._stream = stream
            # Faust hands agents a faust.Stream; its StreamT protocol lacks noack_take.
            async for batch in cast(faust.Stream, stream).noack_take(s.batch_max, within=s.batch_within):
                await self._handle(batch, publish)
                # A store outage must not grow memory without end: stop taking more until saved.
                while self._unsaved_bytes >= s.max_unsaved_bytes:
                    await asyncio.sleep(s.checkpoint_interval)
                    async with self._lock:
                        await self._checkpoint()

        @app.timer(s.checkpoint_interval)
        async def checkpoint_when_idle() -> None:
            async with self._lock:
                await self._retry_waiting(publish)
                await self._check_freshness(publish)
                await self._checkpoint()
            await self.is_ready()  # keeps the readiness gauge current between scrapes of /healthz
            self._measure_lag()

        @_connect(app.on_partitions_revoked)
        async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
            self._settled.clear()  # no batch until the new assignment is loaded
            async with self._lock:
                # Save what is consistent, then always forget: whoever owns a partition next
                # (maybe this worker again) starts from the store and Kafka's committed
                # offset, not from this memory. Events of revoked partitions are never
                # acked: Faust no longer tracks them, and the next owner replays them.
                await self._checkpoint(keep=revoked)
                for tp in revoked:
                    self._drop_unsaved(tp)
                    state = self.engine.partitions.get((tp.topic, tp.partition))
                    if state is not None:
                        self._released.setdefault((tp.topic, tp.partition), set()).update(
                            state.models)
                self.engine.forget((tp.topic, tp.partition) for tp in revoked)
                self._count_assigned()

        @_connect(app.on_partitions_assigned)
        async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
            try:
                self._count_assigned()
                for topic in inputs:
                    await self._load_assigned(topic, sorted(tp.partition for tp in assigned if tp.topic == topic))
                self._forget_released_models({(tp.topic, tp.partition) for tp in assigned})
            finally:
                self._settled.set()

        @_connect(app.on_before_shutdown)
        async def on_shutdown(sender: Any, **_: Any) -> None:
            async with self._lock:
                await self._checkpoint()

        @app.page("/metrics")
        async def metrics_page(web: Any, request: Any) -> Any:
            # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
            content_type = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
            return web.bytes(generate_latest(self.registry), content_type=content_type)

        @app.page("/livez")
        async def liveness_page(web: Any, request: Any) -> Any:
            # Alive while the event loop serves this page: a worker waiting out a Redis or Kafka
            # outage is not ready (/healthz) but alive, and restarting it would mend nothing.
            return web.json({"alive": True})

        @app.page("/healthz")
        async def health_page(web: Any, request: Any) -> Any:
            body = await self.health()
            body |= {"partitions": len(self.engine.partitions), "unsaved_messages": self._unsaved_count}
            return web.json(body, status=200 if body["ready"] else 503)

        return app

    async def _offsets_since(self, since: float) -> dict[str, dict[str, int]] | None:
        """Where each partition of the input topics reaches event time ``since`` (a retraining request's
        data); None, and an error logged, when the broker does not answer three times: a request without
        offsets beats a worker that stops monitoring over one field."""
        s = self.settings
        lookup = functools.partial(asyncio.to_thread, offsets_since, s, [s.topic_events, s.topic_labels], since)
        try:
            return await _retry(lookup)
        except Exception as exc:  # noqa: BLE001
            log.error("could not look up the offsets of a retraining request's data (sent without them): %s", exc)
            return None

    async def _retry_waiting(self, publish: Any) -> None:
        """Join the labels that wait for their predictions, when due (callers hold the lock)."""
        if not self._settled.is_set():
            return
        try:
            out = await self.engine.retry_waiting()
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return
        except Exception as exc:  # noqa: BLE001
            self._die("joining waiting labels failed", exc)
        try:
            self._sent += await publish(out)
        except BaseException as exc:
            self._die("publishing the outputs of waiting labels failed", exc)

    async def _check_freshness(self, publish: Any) -> None:
        """Publish the freshness alerts of models gone silent (callers hold the lock).

        Only what this worker has been able to apply counts as heard: while Redis fails or unsaved
        state holds the batches back nothing is judged, and a partition with messages not applied yet
        (a catch-up) is not either: its models may be sending.
        """
        if not self._settled.is_set() or not self._store_ok or self._unsaved_bytes >= self.settings.max_unsaved_bytes:
            return
        waiting = {key for key, count in self._partition_lag().items() if count}
        out = self.engine.check_freshness(skip=waiting)
        if not out.alerts:
            return
        try:
            self._sent += await publish(out)
        except BaseException as exc:
            self._die("publishing freshness alerts failed", exc)

    async def _load_assigned(self, topic: str, partitions: list[int]) -> None:
        """Load the state of newly assigned partitions, and find logs that restarted.

        The worker commits right after each checkpoint, so a checkpointed partition with
        no committed group offset belongs to a broker that may have lost the group, and
        maybe its log: if the log no longer holds the record the checkpoint ends on, the
        new log is applied from its start instead of being skipped as already seen.
        """
        if not partitions:
            return
        try:
            committed = await _retry(lambda: asyncio.to_thread(committed_offsets, self.settings, topic, partitions))
        except Exception as exc:  # noqa: BLE001 - no restarted-log check then; state still loads lazily
            log.warning("could not read the group's committed offsets: %s", exc)
            committed = {p: 0 for p in partitions}
        async with self._lock:
            try:
                states = {p: await self.engine.load(topic, p) for p in partitions
                          if (topic, p) not in self.engine.partitions}  # fmt: skip
            except StoreUnavailable as exc:
                self._store_failed(exc)
                return
        if topic == self.settings.topic_alerts:
            await self._start_at_end(topic, [p for p, state in states.items()
                                             if state.offset < 0 and committed.get(p) is None])  # fmt: skip
        unverified = {
            p: (state.offset, state.offset_timestamp) for p, state in states.items()
            if committed.get(p) is None and state.offset >= 0 and state.offset_timestamp is not None
        }  # fmt: skip
        if not unverified:
            return
        try:
            holds = await asyncio.to_thread(log_holds, self.settings, topic, unverified)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not check whether the logs of %s restarted: %s", sorted(unverified), exc)
            return
        async with self._lock:
            for partition, held in holds.items():
                if held is False and (topic, partition) in self.engine.partitions:
                    evidence = f"no committed offset and the log no longer holds record {unverified[partition][0]}"
                    self.engine.restart_offsets(topic, partition, evidence)

    async def _start_at_end(self, topic: str, partitions: list[int]) -> None:
        """Partitions read for the first time (no state, no committed offset) start at their end."""
        if not partitions:
            return
        try:
            ends = await _retry(lambda: asyncio.to_thread(end_offsets, self.settings, topic, partitions))
        except Exception as exc:  # noqa: BLE001 - then they are read from their start
            log.warning("could not read the ends of %s %s; reading them from the start: %s", topic, partitions, exc)
            return
        async with self._lock:
            for partition, end in ends.items():
                if (topic, partition) in self.engine.partitions:
                    self.engine.start_at_end(topic, partition, end)

    def _forget_released_models(self, assigned: set[tuple[str, int]]) -> None:
        """Remove the metrics of models that moved to another worker with their partitions.

        aiokafka's rebalance protocol revokes every partition, not only those that move, so
        which models left is known only now: a model stays if an events or labels partition it
        was in is assigned again or a loaded one holds it. Its retrain policy's partition of the
        alert topic keeps nothing: it is placed apart from the model's events, and would keep the
        model's drift series here, frozen, after its events moved. The new owner's series start when
        it applies the model's next events, so two workers never export them side by side for long.
        """
        released, self._released = self._released, {}
        alerts = self.settings.topic_alerts
        kept = {model for key, models in released.items() if key in assigned and key[0] != alerts for model in models}
        kept.update(model for state in self.engine.partitions.values() for model in (*state.monitors, *state.labels))
        gone = {model for key, models in released.items() if key not in assigned or key[0] == alerts
                for model in models} - kept  # fmt: skip
        if gone:
            removed = self.metrics.forget_models(gone)
            log.info("removed %d metric series of %d model(s) now owned elsewhere", removed, len(gone))

    async def _handle(self, batch: Sequence[EventT], publish: Any) -> None:
        """Apply one batch, retrying while the store is down (the engine changes nothing then)."""
        while True:
            await self._settled.wait()
            async with self._lock:
                # Events fetched before the last rebalance, or of partitions no longer ours,
                # are left unacked: their partition's owner reads them again from Kafka.
                generation = self.app.consumer_generation_id
                assigned = self.app.consumer.assignment()
                live = [e for e in batch if e.message.generation_id == generation and e.message.tp in assigned]
                if not live:
                    return
                records = [
                    Record(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value, m.headers)
                    for m in (event.message for event in live)
                ]
                try:
                    out = await self.engine.process(records)
                except StoreUnavailable as exc:
                    self._store_failed(exc)
                except Exception as exc:  # noqa: BLE001
                    # Monitors may be half updated past their offset: only a replay can mend that.
                    self._die("processing a batch failed", exc)
                else:
                    try:  # still under the lock: no checkpoint sees state whose outputs are not queued
                        self._sent += await publish(out)
                    except BaseException as exc:
                        self._die("publishing a batch's outputs failed", exc)
                    # A blocked partition's events were not applied: never acked, so Kafka never
                    # commits past them and a release that knows the stored layout reads them.
                    blocked = self.engine.blocked
                    saved = [e for e in live if (e.message.topic, e.message.partition) not in blocked]
                    self.metrics.partitions_blocked.set(len(blocked))
                    for event in saved:
                        self._unsaved[event.message.tp].append(event)
                    self._unsaved_count += len(saved)
                    self._unsaved_bytes += sum(len(event.message.value or b"") for event in saved)
                    self.metrics.unsaved_messages.set(self._unsaved_count)
                    if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval:
                        await self._checkpoint()
                    return
            await asyncio.sleep(self.settings.checkpoint_interval)

    async def is_ready(self) -> bool:
        """Consuming, with a store and a broker that answer and no blocked partition."""
        return bool((await self.health())["ready"])

    async def health(self) -> dict[str, Any]:
        """Readiness and what it rests on: not rebalancing, the store answers (checkpoints can be
        saved), the broker is connected (offsets can be committed), no partition is blocked (a
        newer release wrote its state). Keeps the ready and partitions_blocked gauges current."""
        rebalancing = bool(self.app.rebalancing)
        try:
            store = await self.store.ping()
        except StoreUnavailable as exc:
            self._store_failed(exc)  # refused credentials: the worker stops there
            store = False
        broker = broker_connected(self.app)
        if self._broker_ok is not None and broker != self._broker_ok:  # log the change, not every check
            if broker:
                log.warning("connected to the Kafka broker again")
            else:
                log.warning("lost the connection to the Kafka broker (group coordinator); not ready")
        self._broker_ok = broker
        blocked = sorted(self.engine.blocked.items())
        ready = not rebalancing and store and broker and not blocked
        self.metrics.ready.set(1 if ready else 0)
        self.metrics.partitions_blocked.set(len(blocked))
        return {
            "ready": ready,
            "rebalancing": rebalancing,
            "store": store,
            "broker": broker,
            "blocked_partitions": [{"topic": topic, "partition": partition, "state_layout": layout}
                                   for (topic, partition), layout in blocked],
        }  # fmt: skip

    async def _checkpoint(self, keep: set[TP] = frozenset()) -> None:  # type: ignore[assignment]
        """Flush what was published, save state, then ack what the save covers (except ``keep``).

        Callers hold the lock, so no batch is between applying and publishing.
        """
        try:
            await self.app.producer.flush()
            for future in self._sent:
                await future  # raises if the broker refused it: Faust itself only logs that
        except Exception as exc:  # noqa: BLE001
            self._die("an alert, DLQ or metrics message was not delivered", exc)
        self._sent = []
        try:
            written = await self.engine.checkpoint()
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return
        self._last_checkpoint = time.monotonic()
        if written:
            self.metrics.last_checkpoint.set(time.time())
            if not self._store_ok:
                log.warning("state store answers again; checkpoint written")
            self._store_ok = True
        if self._stream is None:
            return
        acked = False
        for tp in [tp for tp in self._unsaved if tp not in keep]:
            if (tp.topic, tp.partition) in self.engine.blocked:
                self._unsaved.pop(tp)  # a newer release's state: never acked, so never committed past
                continue
            for event in self._unsaved.pop(tp):
                await self._stream.ack(event)
                acked = True
        self._count_unsaved()
        if acked and not keep:
            try:
                await self.app.consumer.commit()
            except Exception as exc:  # noqa: BLE001 - acked offsets stay acked; Faust's own timer commits them
                log.warning("offset commit failed, will retry: %s", exc)

    def _drop_unsaved(self, tp: TP) -> None:
        self._unsaved.pop(tp, None)
        self._count_unsaved()

    def _count_unsaved(self) -> None:
        events = [event for pending in self._unsaved.values() for event in pending]
        self._unsaved_count = len(events)
        self._unsaved_bytes = sum(len(event.message.value or b"") for event in events)
        self.metrics.unsaved_messages.set(self._unsaved_count)

    def _partition_lag(self) -> dict[tuple[str, int], int]:
        """Per assigned partition, the messages not applied yet: the high watermark the last fetch saw
        minus the next offset to apply (read-ahead buffers count as not applied); unknown ones left out."""
        lags: dict[tuple[str, int], int] = {}
        for tp in self.app.consumer.assignment():
            try:
                highwater = self.app.consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - no fetch answered for it yet: nothing known, nothing counted
                continue
            state = self.engine.partitions.get((tp.topic, tp.partition))
            if highwater is None or state is None:
                continue
            lags[(tp.topic, tp.partition)] = max(0, highwater - (state.offset + 1))
        return lags

    def _measure_lag(self) -> None:
        """Per topic, the messages of the assigned partitions not applied yet."""
        lag: dict[str, int] = defaultdict(int)
        for (topic, _), count in self._partition_lag().items():
            lag[topic] += count
        for topic in (self.settings.topic_events, self.settings.topic_labels):
            self.metrics.consumer_lag.labels(topic).set(lag.get(topic, 0))

    def _count_assigned(self) -> None:
        assigned = self.app.consumer.assignment()
        self.metrics.partitions_assigned.set(sum(1 for tp in assigned if tp.topic == self.settings.topic_events))

    def _store_failed(self, exc: Exception) -> None:
        if access_denied(exc):
            # Wrong credentials or a missing ACL permission: no wait mends them. Memory holds
            # nothing Redis and Kafka lack (offsets are committed only after a checkpoint).
            log.critical("%s", redis_problem(self.settings, exc))
            logging.shutdown()
            os._exit(EXIT_CONFIG)
        self.metrics.checkpoint_failures.inc()
        self.metrics.ready.set(0)
        if self._store_ok:  # log the change, not every retry
            log.warning("state store unavailable; holding offsets until it answers: %s", exc)
        self._store_ok = False

    def _die(self, what: str, exc: BaseException) -> None:
        """Exit at once: Redis and Kafka hold a consistent past, memory does not."""
        log.critical("%s; exiting so that a restart replays from the last checkpoint: %r", what, exc)
        logging.shutdown()
        os._exit(70)

    def run(self) -> None:
        """Run until stopped by a signal (blocks)."""
        worker = faust.Worker(self.app, loglevel=self.settings.log_level, quiet=True)
        worker.execute_from_commandline()


T = TypeVar("T")
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[None]])


def _connect(signal: Any) -> Callable[[Handler], Handler]:
    """``signal.connect`` as a typed decorator: Faust's stubs accept only handlers of
    ``(sender, *args, signal=...)``, while it sends revoked/assigned partitions positionally."""
    connect: Callable[[Handler], Handler] = signal.connect
    return connect


async def _retry(attempt: Callable[[], Awaitable[T]], tries: int = 3, pause: float = 1.0) -> T:
    """``attempt()``, tried again after a pause when it raises (a broker still starting up)."""
    for _ in range(tries - 1):
        try:
            return await attempt()
        except Exception as exc:  # noqa: BLE001
            log.info("retrying after: %s", exc)
            await asyncio.sleep(pause)
    return await attempt()
