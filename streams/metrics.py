"""Every Prometheus metric of a worker, on a registry passed in.

Label values are bounded: ``reason`` comes from ``decode.REASONS``; ``model``
from at most ``max_models`` tracked models (more are rejected); ``feature`` from
at most ``max_features`` per model; ``version`` from at most ``max_versions``
live versions per model ("" for input features); ``segment`` from at most
``max_segments`` tracked values per model ("" for the whole model, "other" for
the untracked rest); ``detector``, ``type``, ``severity``, ``status``, ``outcome``
and ``metric`` from fixed sets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_consumed = Counter(
            "driftstream_messages_consumed_total", "Kafka messages read from the events topic", registry=registry
        )
        self.events_consumed = Counter(
            "driftstream_events_consumed_total", "Valid inference events processed", ["model"], registry=registry
        )
        self.events_rejected = Counter(
            "driftstream_events_rejected_total", "Messages or batch elements sent to the DLQ", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.invalid_values = Counter(
            "driftstream_invalid_feature_values_total", "Feature values of the wrong type (treated as missing)",
            ["model"], registry=registry,
        )  # fmt: skip
        self.ignored_features = Counter(
            "driftstream_ignored_features_total", "New features beyond max_features per model", ["model"],
            registry=registry,
        )  # fmt: skip
        self.drift = DriftSeries(registry)  # driftstream_drift_statistic and driftstream_drift_threshold
        self.segment_events = Counter(
            "driftstream_segment_events_total",
            "Events per tracked segment value of a model; \"other\" counts the values beyond max_segments",
            ["model", "segment"], registry=registry,
        )  # fmt: skip
        self.versions_retired = Counter(
            "driftstream_versions_retired_total",
            "Model versions retired (their prediction monitors dropped) beyond max_versions", ["model"],
            registry=registry,
        )  # fmt: skip
        self.partitions_blocked = Gauge(
            "driftstream_partitions_blocked",
            "Partitions whose stored state has a layout newer than this worker knows (left untouched; not ready)",
            registry=registry,
        )  # fmt: skip
        self.alerts = Counter(
            "driftstream_alerts_total", "Alerts published", ["model", "type", "severity", "status"],
            registry=registry,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "driftstream_batch_duration_seconds", "Time to process one batch of messages",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=registry,
        )  # fmt: skip
        self.batch_messages = Histogram(
            "driftstream_batch_messages", "Messages per processed batch",
            buckets=(1, 10, 100, 500, 1000, 5000), registry=registry,
        )  # fmt: skip
        self.checkpoint_seconds = Histogram(
            "driftstream_checkpoint_duration_seconds", "Time to write one state checkpoint to the store",
            registry=registry,
        )  # fmt: skip
        self.checkpoint_failures = Counter(
            "driftstream_checkpoint_failures_total", "Checkpoints the state store refused", registry=registry
        )
        self.state_restore_failures = Counter(
            "driftstream_state_restore_failures_total", "Snapshots that could not be restored (started fresh)",
            registry=registry,
        )  # fmt: skip
        self.checkpoint_conflicts = Counter(
            "driftstream_checkpoint_conflicts_total",
            "Partition checkpoints the store refused: newer_owner (it held a later offset) or diverged "
            "(not the offset this worker last saw; the partition is rewritten whole)", ["kind"], registry=registry,
        )  # fmt: skip
        self.offset_resets = Counter(
            "driftstream_offset_resets_total", "Partitions whose offsets started over (log recreated or lost)",
            registry=registry,
        )  # fmt: skip
        self.unsaved_messages = Gauge(
            "driftstream_unsaved_messages", "Messages processed but not yet covered by a checkpoint",
            registry=registry,
        )  # fmt: skip
        self.last_checkpoint = Gauge(
            "driftstream_last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint the store accepted",
            registry=registry,
        )  # fmt: skip
        self.partitions_assigned = Gauge(
            "driftstream_partitions_assigned", "Events-topic partitions assigned to this worker", registry=registry
        )
        self.models_tracked = Gauge(
            "driftstream_models_tracked", "Model states on this worker: one per model and partition holding it (of "
            "the events, labels or alert topic)", registry=registry,
        )  # fmt: skip
        # Labels and quality (streams.labels, detectors.monitors.quality)
        self.label_messages_consumed = Counter(
            "driftstream_label_messages_consumed_total", "Kafka messages read from the labels topic",
            registry=registry,
        )  # fmt: skip
        self.predictions_stored = Counter(
            "driftstream_predictions_stored_total", "Predictions whose join data was stored for a later label "
            "(events with an event_id, each id once)", ["model"], registry=registry,
        )  # fmt: skip
        self.labels = Counter(
            "driftstream_labels_total",
            "Labels by what became of them: joined, duplicate (the same label came before), conflict (a "
            "different label came before; the first stands), waiting (came before its prediction; counted again "
            "when it leaves), unmatched (waited label_ttl, no prediction), overflow (pushed out of a full wait)",
            ["model", "outcome"], registry=registry,
        )  # fmt: skip
        self.labels_waiting = Gauge(
            "driftstream_labels_waiting", "Labels waiting for their prediction on this worker", ["model"],
            registry=registry,
        )  # fmt: skip
        self.label_coverage = Gauge(
            "driftstream_label_coverage_ratio", "Share of the model's stored predictions that were ever labeled",
            ["model"], registry=registry,
        )  # fmt: skip
        self.label_lag = Histogram(
            "driftstream_label_lag_seconds", "Label time minus its prediction's event time, per joined label",
            ["model"], buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400,
                                30 * 86400), registry=registry,
        )  # fmt: skip
        self.event_lag = Histogram(
            "driftstream_event_lag_seconds", "Processing time minus event time, per event (negative: stamped "
            "ahead of the worker's clock, counted in the lowest bucket)",
            ["model"], buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400),
            registry=registry,
        )  # fmt: skip
        self.events_out_of_time = Counter(
            "driftstream_events_out_of_time_total", "Events stamped further ahead of the worker's clock than "
            "EVENT_TIME_FUTURE (direction future) or behind it than EVENT_TIME_PAST (past)",
            ["model", "direction"], registry=registry,
        )  # fmt: skip
        self.quality = Gauge(
            "driftstream_quality",
            "Model quality over the latest window of labeled events, per model, version, segment (\"\" = whole "
            "model) and metric (accuracy, f1, roc_auc, log_loss, mae, rmse, ...; label_lag_p50, coverage)",
            ["model", "version", "segment", "metric"], registry=registry,
        )  # fmt: skip
        self.consumer_lag = Gauge(
            "driftstream_consumer_lag_messages",
            "Messages of this worker's assigned partitions not read yet (high watermark minus position), per topic",
            ["topic"], registry=registry,
        )  # fmt: skip
        # Retraining requests (streams.retrain)
        self.retrain_requests = Counter(
            "driftstream_retrain_requests_total",
            "Retraining requests by outcome: published, or suppressed (a request for the model was published less "
            "than retrain_cooldown before)", ["model", "outcome"], registry=registry,
        )  # fmt: skip
        self.ready = Gauge(
            "driftstream_ready",
            "1 when the worker is consuming: not rebalancing, its state store answers, its broker connection is up "
            "and no partition is blocked by a newer state layout", registry=registry,
        )  # fmt: skip

    def set_drift(self, statistics: dict[tuple[str, str, str, str, str], float],
                  lines: dict[tuple[str, str, str, str, str], float]) -> None:  # fmt: skip
        """Set the statistic and line series of (model, version, segment, feature, detector) keys."""
        self.drift.set(statistics, lines)

    def forget_models(self, models: Iterable[str]) -> int:
        """Remove every series whose ``model`` label is one of ``models``; how many were removed.

        For models this worker no longer owns (their partitions moved to another
        worker), so that no two workers export the same series. Every metric of this
        object with a ``model`` label is covered, whatever its other labels.
        """
        gone = set(models)
        if not gone:
            return 0
        removed = self.drift.remove(lambda key: key[0] in gone)
        for metric in vars(self).values():
            if not isinstance(metric, MetricWrapperBase):
                continue
            names, series = _labelled_series(metric)
            if "model" not in names:
                continue
            at = names.index("model")
            for values in series:
                if values[at] in gone:
                    metric.remove(*values)
                    removed += 1
        return removed


    def forget_version(self, model: str, version: str, quality: bool = False) -> int:
        """Remove the series of a retired model version: of its prediction monitors, or with ``quality``
        of its quality monitor (each retires its versions on its own)."""
        if not quality:
            return self.drift.remove(lambda key: key[0] == model and key[1] == version)
        removed = 0
        for metric in (self.quality,):
            names, series = _labelled_series(metric)
            at_model, at_version = names.index("model"), names.index("version")
            for values in series:
                if values[at_model] == model and values[at_version] == version:
                    metric.remove(*values)
                    removed += 1
        return removed


class DriftSeries(Collector):
    """The ``driftstream_drift_statistic`` and ``driftstream_drift_threshold`` gauges, one series each
    per (model, version, segment, feature, detector) key: a custom collector (prometheus_client's
    documented way to export values kept elsewhere), one dict entry a key where two labelled
    ``Gauge`` children took about 1.2 KB (68 MB of 100 models x 100 features x their detectors).
    """

    LABELS = ("model", "version", "segment", "feature", "detector")
    STATISTIC = ("driftstream_drift_statistic",
                 "Latest statistic per model, version (prediction only), segment (\"\" = whole model), feature and "
                 "detector")  # fmt: skip
    THRESHOLD = (
        "driftstream_drift_threshold",
        "The line each driftstream_drift_statistic series is judged against (its warning line, or the critical "
        "one once crossed; window tests' lines move with the counts and the false-alarm budget)",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self._series: dict[tuple[str, ...], list[float | None]] = {}  # key -> [statistic, line]
        self._lock = threading.Lock()  # a scrape reads from the HTTP server's thread
        registry.register(self)

    def set(self, statistics: dict[tuple[str, str, str, str, str], float],
            lines: dict[tuple[str, str, str, str, str], float]) -> None:  # fmt: skip
        series = self._series
        with self._lock:
            for at, values in ((0, statistics), (1, lines)):
                for key, value in values.items():
                    pair = series.get(key)
                    if pair is None:
                        pair = series[key] = [None, None]
                    pair[at] = float(value)

    def remove(self, matches: Callable[[tuple[str, ...]], bool]) -> int:
        """Drop the keys ``matches`` picks; how many series went (a key's statistic and line count apart)."""
        with self._lock:
            gone = [key for key in self._series if matches(key)]
            removed = 0
            for key in gone:
                removed += sum(value is not None for value in self._series.pop(key))
        return removed

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(*self.STATISTIC, labels=self.LABELS),
                GaugeMetricFamily(*self.THRESHOLD, labels=self.LABELS)]  # fmt: skip

    def collect(self) -> Iterable[Metric]:
        statistic = GaugeMetricFamily(*self.STATISTIC, labels=self.LABELS)
        threshold = GaugeMetricFamily(*self.THRESHOLD, labels=self.LABELS)
        with self._lock:
            pairs = list(self._series.items())
        for key, (value, line) in pairs:
            if value is not None:
                statistic.add_metric(key, value)
            if line is not None:
                threshold.add_metric(key, line)
        return [statistic, threshold]


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every ``v`` of ``values`` (a labelled child), counted in one go.

    prometheus_client has no bulk observe, and one call per joined label cost more than the
    join; this adds each bucket's count and the sum at once, through the child's ``_upper_bounds``,
    ``_buckets`` (per-bucket, not cumulative, counts) and ``_sum`` (0.26 here; long unchanged), and
    ``tests/streams/test_metrics.py`` checks it against ``observe``.
    """
    if not values.size:
        return
    bounds = np.asarray(histogram._upper_bounds, dtype=np.float64)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=bounds.size)
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    histogram._sum.inc(float(values.sum()))


def _labelled_series(metric: MetricWrapperBase) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """A labelled metric's label names and the label values of each of its series.

    prometheus_client has no public way to list them (``remove_by_labels`` came in 2025,
    client_python PR #1121, after the 0.20 pyproject allows): a parent metric keeps the
    names in ``_labelnames`` and one child per tuple of label values in ``_metrics``,
    guarded by ``_lock`` (0.26 here; long unchanged). With ``observe_many``, the module's only
    private access.
    """
    names = tuple(getattr(metric, "_labelnames", ()))
    if not names:
        return names, []
    with metric._lock:
        return names, [tuple(values) for values in metric._metrics]
