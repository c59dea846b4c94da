"""Settings, read once: environment (DRIFTSTREAM_*) over an optional TOML file."""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shlex
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from detectors.budget import budgeted
from detectors.columns import FeatureKind, category_text
from detectors.config import MonitorConfig
from detectors.monitors.quality import QualitySpec
from detectors.monitors.schema import Constraint
from detectors.retrain import RetrainConfig

CONFIG_ENV = "DRIFTSTREAM_CONFIG"
ENV_PREFIX = "DRIFTSTREAM_"
# DRIFTSTREAM_* variables that name no setting but are not typos either: the config file's name,
# and the test suite's own (tests/conftest.py).
OTHER_VARIABLES = (CONFIG_ENV, "DRIFTSTREAM_TEST_")
SECRETS = frozenset({"kafka_sasl_password", "redis_password", "redis_sentinel_password"})
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_D = MonitorConfig()  # the detection defaults live in one place


_CONSTRAINT_RULES = ("min", "max", "allowed", "not_null", "max_share", "critical_share")


def constraint_of(feature: str, rules: Any) -> Constraint:
    """A feature's [models.NAME.constraints.FEATURE] table as a Constraint; a ValueError names the feature and rule."""
    if not isinstance(rules, dict):
        raise ValueError(f"constraints.{feature} must be a table of rules ({', '.join(_CONSTRAINT_RULES)})")
    unknown = sorted(set(rules) - set(_CONSTRAINT_RULES))
    if unknown:
        raise ValueError(f"constraints.{feature}: unknown rule {unknown[0]!r}; the rules are "
                         f"{', '.join(_CONSTRAINT_RULES)}")  # fmt: skip
    values = dict(rules)
    if "allowed" in values:
        if not isinstance(values["allowed"], list):
            raise ValueError(f"constraints.{feature}.allowed must be a list of values")
        values["allowed"] = tuple(category_text(value) for value in values["allowed"])
    try:
        return Constraint(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"constraints.{feature}: {exc}") from None


class ModelSettings(BaseModel):
    """Per-model monitoring config (from the TOML file's [models.NAME] tables; a model, not settings:
    plain environment variables such as TASK or EVENT_RATE must not leak into every model)."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, FeatureKind] = Field(default_factory=dict)
    # Segment keys to slice by: a key ("region") or a combination (["region", "device"]).
    segments: list[str | list[str]] = Field(default_factory=list)
    # This model's own false-alarm budget and event rate (default: the global settings).
    false_alarm_budget: float | None = Field(None, ge=0)
    event_rate: float | None = Field(None, gt=0)
    # Quality from labels: the task (auto: from the labels), reference values used when no baseline
    # holds the model's reference quality, and absolute lines (see docs/labels.md).
    task: Literal["auto", "classification", "regression"] = "auto"
    positive_class: str | None = None
    score_threshold: float = Field(0.5, gt=0, lt=1)
    quality_expected: dict[str, float] = Field(default_factory=dict)
    quality_floors: dict[str, float] = Field(default_factory=dict)
    # Seconds of silence before a freshness alert (default: the global STALE_AFTER).
    stale_after: float | None = Field(None, ge=0)
    # Explicit per-feature constraints, [models.NAME.constraints.FEATURE]: min, max, allowed, not_null,
    # max_share, critical_share (docs/data-quality.md).
    constraints: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for feature, rules in value.items():
            constraint_of(feature, rules)  # a ValueError names the feature and the rule
        return value

    def constraint_objects(self) -> dict[str, Constraint]:
        return {feature: constraint_of(feature, rules) for feature, rules in self.constraints.items()}

    @field_validator("segments")
    @classmethod
    def _segment_specs(cls, value: list[str | list[str]]) -> list[str | list[str]]:
        for spec in value:
            keys = [spec] if isinstance(spec, str) else spec
            if not keys or any(not key for key in keys) or len(set(keys)) != len(keys):
                raise ValueError(f"a segment is a key or a list of distinct keys, got {spec!r}")
        return value

    def segment_specs(self) -> tuple[tuple[str, ...], ...]:
        """Each slice as a tuple of keys, in the config's order."""
        return tuple((spec,) if isinstance(spec, str) else tuple(spec) for spec in self.segments)


class Settings(BaseSettings):
    """Everything a worker, the simulator and the demo read from the outside."""

    model_config = SettingsConfigDict(env_prefix="DRIFTSTREAM_", extra="forbid", frozen=True)

    # Kafka
    kafka_bootstrap_servers: str = Field("localhost:9092", description="host:port[,host:port]")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN",
        description="PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (SASL_* protocols)",
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name (SASL_* protocols)")
    kafka_sasl_password: str | None = Field(None, description="SASL password (SASL_* protocols)")
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle to verify the brokers (SSL, SASL_SSL)")
    kafka_ssl_certfile: str | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_keyfile: str | None = Field(None, description="client key (mutual TLS)")
    app_id: str = Field("driftstream", description="Faust app id = Kafka consumer group")
    topic_events: str = Field("inference-events", description="topic of the inference events the worker reads")
    topic_labels: str = Field(
        "inference-labels",
        description="topic of the late labels, joined to their events by event_id",
    )
    topic_alerts: str = Field("drift-alerts", description="topic the alerts go to")
    topic_metrics: str = Field("drift-metrics", description="topic of the per-window drift statistics")
    topic_dlq: str = Field(
        "inference-events-dlq",
        description="dead-letter topic of messages that could not be decoded",
    )
    topic_retrain: str = Field("retrain-requests", description="topic of the retraining requests")
    create_topics: bool = Field(True, description="create missing topics at start-up")
    topic_partitions: int = Field(4, ge=1, description="partitions of topics this app creates")
    topic_replication: int = Field(1, ge=1, description="replication factor of topics this app creates")
    broker_session_timeout: float = Field(10.0, gt=0, description="seconds")
    broker_rebalance_timeout: float = Field(10.0, gt=0, description="seconds")
    broker_heartbeat_interval: float = Field(1.0, gt=0, description="seconds")

    # Redis
    redis_mode: Literal["standalone", "sentinel", "cluster"] = Field(
        "standalone", description="standalone and cluster connect to redis_url; sentinel asks redis_sentinels"
    )
    redis_url: str = Field("redis://localhost:6379/0", description="redis://HOST:PORT/DB, rediss:// (TLS) or unix://PATH")
    redis_username: str | None = Field(None, description="ACL user (Redis 6+) when not in the URL")
    redis_password: str | None = Field(None, description="AUTH password when not in the URL")
    redis_ssl_ca_certs: str | None = Field(None, description="CA bundle to verify the server (TLS)")
    redis_ssl_certfile: str | None = Field(None, description="client certificate (mutual TLS)")
    redis_ssl_keyfile: str | None = Field(None, description="client key (mutual TLS)")
    redis_sentinels: str = Field("", description="host:port[,host:port] of the sentinels (redis_mode=sentinel)")
    redis_sentinel_master: str = Field("mymaster", description="service name the sentinels monitor")
    redis_sentinel_password: str | None = Field(None, description="AUTH password of the sentinels themselves")
    redis_socket_timeout: float = Field(5.0, gt=0, description="seconds before a Redis call counts as failed")
    state_prefix: str = Field("driftstream", description="prefix of every Redis key")
    state_backend: Literal["redis", "memory"] = Field(
        "redis", description="memory keeps state in-process only (demo without redis-server)"
    )
    checkpoint_interval: float = Field(1.0, gt=0, description="seconds between state checkpoints")
    max_unsaved_bytes: int = Field(
        256 * 1024 * 1024, ge=1, description="stop consuming while processed messages this large wait for a checkpoint"
    )

    # Worker
    web_host: str = Field("0.0.0.0", description="address the worker's web server (/metrics, /healthz) listens on")
    web_port: int = Field(6066, ge=1, le=65535, description="serves /metrics and /healthz")
    data_dir: str = Field("", description="Faust data dir (default: a temp dir)")
    batch_max: int = Field(
        1000, ge=1, description="messages per processing batch; the worker holds up to 3x this many messages "
        "(the batch and Faust's read-ahead, at least 16) plus aiokafka's one fetch per partition, so with large "
        "batch envelopes lower it (16 for 1000-event envelopes)"
    )
    batch_within: float = Field(0.2, gt=0, description="seconds to wait to fill a batch")
    log_level: str = Field(
        "INFO",
        description="DEBUG | INFO | WARNING | ERROR (DEBUG also shows the Kafka client's own log)",
    )

    # Input bounds
    max_message_bytes: int = Field(
        10 * 1024 * 1024, ge=1024,
        description="largest input message accepted; larger ones go to the DLQ",
    )
    max_events_per_message: int = Field(10_000, ge=1, description="events of one batch envelope; more are rejected")
    max_models: int = Field(100, ge=1, description="models tracked per worker; more are rejected")
    max_name_length: int = Field(
        200, ge=1,
        description="characters of a model, feature or version name; longer is rejected",
    )
    max_string_length: int = Field(1024, ge=1, description="characters of a categorical value; longer is rejected")
    max_segment_keys: int = Field(8, ge=1, description="keys of an event's segment object; more is rejected")
    max_segment_length: int = Field(64, ge=1, description="characters of a segment key or value; longer is rejected")
    # Labels (issue 13): the join of late labels to their predictions
    label_ttl: float = Field(7 * 24 * 3600.0, ge=0, description="seconds a prediction waits for its label in "
                             "Redis (and a label for its prediction); 0 = no join data is stored")  # fmt: skip
    label_wait_max: int = Field(10_000, ge=0, description="labels per model and labels partition waiting for a "
                                "prediction not stored yet; beyond it the oldest is dropped (overflow)")  # fmt: skip
    label_retry_interval: float = Field(5.0, gt=0, description="seconds between lookups of waiting labels")

    # Retraining requests (docs/retraining.md): the policy reads the alert topic back
    retrain_on: tuple[Literal["performance", "concept_drift", "data_drift", "prediction_drift"], ...] = Field(
        ("performance", "concept_drift", "data_drift"), description="alert types that request a retraining "
        "(data_drift: only the model-level dataset drift alert); [] = no requests, the alert topic is not read")
    retrain_severity: Literal["warning", "critical"] = Field("critical", description="the lowest alert severity "
                                                            "that requests a retraining")  # fmt: skip
    retrain_cooldown: float = Field(86400.0, ge=0, description="seconds (of alert detection time) between two "
                                    "requests for one model; triggers within it are counted as suppressed")

    dlq_max_value_bytes: int = Field(
        900_000, ge=1024, description="bad messages reach the DLQ cut to this size; headers point at the whole one"
    )

    # Detection: every field of detectors.config.MonitorConfig, same names and defaults
    # (lists as JSON in the environment, e.g. DRIFTSTREAM_NUMERIC_TESTS='["psi","ks"]').
    reference_size: int = Field(
        _D.reference_size,
        description="rows of the stream taken as reference when no baseline is loaded",
    )
    window_size: int = Field(_D.window_size, description="rows per window of the windowed tests")
    window_step: int = Field(_D.window_step, description="0 = tumbling windows")
    numeric_tests: tuple[str, ...] = Field(
        _D.numeric_tests,
        description="numeric tests (JSON list): psi, ks, wasserstein, jensen_shannon, null_rate, out_of_range",
    )
    categorical_tests: tuple[str, ...] = Field(
        _D.categorical_tests,
        description="categorical tests (JSON list): psi, chi_square, jensen_shannon, unseen_rate, null_rate",
    )
    change_detectors: tuple[str, ...] = Field(
        _D.change_detectors,
        description="change-point detectors on numeric features (JSON list): adwin, page_hinkley",
    )
    multiple_testing: Literal["none", "bonferroni", "benjamini_hochberg"] = Field(
        "none",
        description="correction over a model's features: none | bonferroni | benjamini_hochberg",
    )
    psi_bins: int = Field(_D.psi_bins, description="bins of the PSI histogram")
    psi_warning: float = Field(_D.psi_warning, description="PSI from which a window warns")
    psi_critical: float = Field(_D.psi_critical, description="PSI from which a window is critical")
    ks_alpha: float = Field(_D.ks_alpha, description="per-window significance level of the KS test")
    ks_critical_effect: float = Field(
        _D.ks_critical_effect,
        description="KS D from which a significant window is critical",
    )
    chi_square_alpha: float = Field(
        _D.chi_square_alpha,
        description="per-window significance level of the chi-square test",
    )
    chi_square_critical_effect: float = Field(
        _D.chi_square_critical_effect,
        description="Cramer's V from which a significant window is critical",
    )
    wasserstein_warning: float = Field(
        _D.wasserstein_warning,
        description="Wasserstein distance (in reference standard deviations) from which a window warns",
    )
    wasserstein_critical: float = Field(
        _D.wasserstein_critical,
        description="Wasserstein distance (in reference standard deviations) from which it is critical",
    )
    jensen_shannon_warning: float = Field(
        _D.jensen_shannon_warning,
        description="Jensen-Shannon distance from which a window warns",
    )
    jensen_shannon_critical: float = Field(
        _D.jensen_shannon_critical,
        description="Jensen-Shannon distance from which a window is critical",
    )
    unseen_rate_warning: float = Field(
        _D.unseen_rate_warning,
        description="share of categories never seen in the reference from which a window warns",
    )
    unseen_rate_critical: float = Field(
        _D.unseen_rate_critical,
        description="share of unseen categories from which a window is critical",
    )
    null_rate_warning: float = Field(
        _D.null_rate_warning,
        description="rise of the missing share over the reference's from which a window warns",
    )
    null_rate_critical: float = Field(
        _D.null_rate_critical,
        description="rise of the missing share from which a window is critical",
    )
    psi_alpha: float = Field(_D.psi_alpha, description="per-window alpha of PSI's null line (0: off; the budget "
                             "sets it, as for JENSEN_SHANNON_ALPHA, UNSEEN_RATE_ALPHA, NULL_RATE_ALPHA)")  # fmt: skip
    jensen_shannon_alpha: float = Field(
        _D.jensen_shannon_alpha,
        description="per-window alpha of the Jensen-Shannon null line (0: off; the budget may set it)",
    )
    unseen_rate_alpha: float = Field(
        _D.unseen_rate_alpha,
        description="per-window alpha of the unseen-rate null line (0: off; the budget may set it)",
    )
    null_rate_alpha: float = Field(
        _D.null_rate_alpha,
        description="per-window alpha of the null-rate null line (0: off; the budget may set it)",
    )
    max_categories: int = Field(
        _D.max_categories,
        description="reference categories kept per feature; the rest share one bucket",
    )
    reference_points: int = Field(
        _D.reference_points,
        description="points of a numeric reference summary (rank error <= 1/points; about 2/points for a "
        "reference of the stream over 2 x points rows, collected in compacted blocks)",
    )
    category_map_size: int = Field(
        _D.category_map_size,
        description="log2 slots of the categorical reference's frequent-items sketch (3-16)",
    )
    adwin_delta: float = Field(
        _D.adwin_delta,
        description="ADWIN's confidence parameter (smaller: fewer, surer change points)",
    )
    ph_delta: float = Field(_D.ph_delta, description="Page-Hinkley's tolerated drift magnitude")
    ph_threshold: float = Field(_D.ph_threshold, description="Page-Hinkley's detection threshold")
    ph_alpha: float = Field(_D.ph_alpha, description="Page-Hinkley's forgetting factor (1 under a false-alarm budget)")
    ph_min_instances: int = Field(_D.ph_min_instances, description="rows Page-Hinkley sees before it may detect")
    change_critical_sigma: float = Field(
        _D.change_critical_sigma,
        description="change-point shift (in reference standard deviations) from which it is critical",
    )
    resolve_after: int = Field(
        _D.resolve_after,
        description="rows without a new change point before its alert resolves",
    )
    max_features: int = Field(
        _D.max_features,
        description="features tracked per model; further ones are ignored and counted",
    )
    max_versions: int = Field(_D.max_versions, description="live model versions per model; the least recently seen "
                              "is retired")  # fmt: skip
    max_segments: int = Field(_D.max_segments, description="segment values tracked per model (first seen first); "
                              "the rest count as 'other'")  # fmt: skip
    false_alarm_budget: float = Field(_D.false_alarm_budget, description="expected false alarms per model per week "
                                      "(per model: [models.NAME] false_alarm_budget); 0 = off, each detector keeps "
                                      "its own line")  # fmt: skip
    event_rate: float = Field(_D.event_rate, description="events per second per model the budget assumes (per "
                              "model: [models.NAME] event_rate)")  # fmt: skip
    alert_per_detector: bool = Field(_D.alert_per_detector, description="one alert per detector instead of "
                                     "one incident per (model, segment, feature) naming every detector that "
                                     "agrees")  # fmt: skip
    dataset_drift_features: int = Field(_D.dataset_drift_features, description="input features of a model in "
                                        "critical data drift at once that raise a model-level data_drift alert "
                                        "(dataset drift); 0 = off")  # fmt: skip
    dataset_drift_events: int = Field(_D.dataset_drift_events, description="events that many must have been in "
                                      "critical drift before it fires")  # fmt: skip
    # The inputs' schema, ranges, outliers, joint drift and freshness (docs/data-quality.md)
    schema_checks: bool = Field(_D.schema_checks, description="missing_feature, new_feature and kind_change "
                                "checks per model window (and the config file's constraints)")  # fmt: skip
    missing_feature_share: float = Field(_D.missing_feature_share, description="rise of a reference feature's "
                                         "absent-or-null share from which missing_feature alerts")  # fmt: skip
    new_feature_share: float = Field(_D.new_feature_share, description="share of a window's events carrying a "
                                     "feature the reference never had from which new_feature alerts")  # fmt: skip
    kind_change_share: float = Field(_D.kind_change_share, description="rise of the share of a feature's values "
                                     "of another kind (strings in a numeric one, ...) from which kind_change "
                                     "alerts")  # fmt: skip
    out_of_range_quantile: float = Field(_D.out_of_range_quantile, description="out_of_range: the reference's "
                                         "quantiles at this level and 1 - it bound the range")  # fmt: skip
    out_of_range_margin: float = Field(_D.out_of_range_margin, description="out_of_range: the range widened on "
                                       "each side by this share of the span between those quantiles")  # fmt: skip
    out_of_range_warning: float = Field(_D.out_of_range_warning, description="share of a window's values outside "
                                        "the range from which out_of_range warns")  # fmt: skip
    out_of_range_critical: float = Field(_D.out_of_range_critical, description="share from which it is critical")
    out_of_range_alpha: float = Field(_D.out_of_range_alpha, description="per-window alpha of out_of_range's null "
                                      "line (0: off; the budget sets it)")  # fmt: skip
    pca_variance: float = Field(_D.pca_variance, description="pca_reconstruction: share of the variance of a "
                                "model's standardised numeric features its kept components explain; 0 = off")
    pca_alpha: float = Field(_D.pca_alpha, description="pca_reconstruction: per-window two-sided alpha (the "
                             "budget's share when stricter)")  # fmt: skip
    pca_critical_change: float = Field(_D.pca_critical_change, description="relative change of the mean "
                                       "reconstruction error from which a pca_reconstruction alert is critical")
    outlier_sigma: float = Field(_D.outlier_sigma, description="an event is an outlier when one of its numeric "
                                 "features lies this many reference std from the reference mean; 0 = off")
    outlier_warning: float = Field(_D.outlier_warning, description="share of a window's events that are outliers "
                                   "from which outliers warns")  # fmt: skip
    outlier_critical: float = Field(_D.outlier_critical, description="share from which outliers is critical")
    outlier_alpha: float = Field(_D.outlier_alpha, description="outliers: per-window alpha of its line over the "
                                 "share the reference showed (the budget's share when stricter)")  # fmt: skip
    stale_after: float = Field(_D.stale_after, description="seconds without an event of a model that has been "
                               "sending before a freshness data_quality alert (per model: [models.NAME] "
                               "stale_after); 0 = off")  # fmt: skip
    event_time_future: float = Field(300.0, ge=0, description="events stamped more than this many seconds ahead "
                                     "of the worker's clock are counted (driftstream_events_out_of_time_total)")
    event_time_past: float = Field(7 * 86400.0, ge=0, description="events stamped more than this many seconds "
                                   "behind the worker's clock are counted")  # fmt: skip
    # Model quality from late labels (docs/labels.md)
    quality_window: int = Field(_D.quality_window, description="labeled events per quality window (per model "
                                "version and segment)")  # fmt: skip
    quality_window_seconds: float = Field(_D.quality_window_seconds, description="> 0: a quality window also "
                                          "closes once its predictions span this many seconds")  # fmt: skip
    quality_reference_windows: int = Field(_D.quality_reference_windows, description="first windows of a version "
                                           "that make its reference quality when no baseline or config gives one")
    max_classes: int = Field(
        _D.max_classes,
        description="classes tracked per model version (first seen first); the rest count as 'other'",
    )
    performance_alpha: float = Field(_D.performance_alpha, description="per-window alpha of the performance test "
                                     "(the budget's share when stricter)")  # fmt: skip
    performance_critical_drop: float = Field(
        _D.performance_critical_drop,
        description="accuracy drop (absolute) from which a performance alert is critical",
    )
    performance_critical_rise: float = Field(
        _D.performance_critical_rise,
        description="MAE rise (relative to the reference's) from which a performance alert is critical",
    )
    error_detector: Literal["ddm", "hddm_w", "hddm_a", "adwin"] = Field(
        "ddm", description="concept drift on a classifier's 0/1 errors")
    regression_detector: Literal["page_hinkley", "adwin"] = Field(
        "page_hinkley", description="concept drift on a regressor's absolute errors")
    ddm_warm_start: int = Field(_D.ddm_warm_start, description="errors DDM sees before it may detect")
    ddm_warning_threshold: float = Field(
        _D.ddm_warning_threshold,
        description="DDM's warning level (standard deviations)",
    )
    ddm_drift_threshold: float = Field(_D.ddm_drift_threshold, description="DDM's drift level (standard deviations)")
    hddm_w_drift_confidence: float = Field(_D.hddm_w_drift_confidence, description="HDDM_W's drift confidence")
    hddm_w_warning_confidence: float = Field(_D.hddm_w_warning_confidence, description="HDDM_W's warning confidence")
    hddm_w_lambda: float = Field(_D.hddm_w_lambda, description="HDDM_W's weight of recent errors")
    hddm_a_drift_confidence: float = Field(_D.hddm_a_drift_confidence, description="HDDM_A's drift confidence")
    hddm_a_warning_confidence: float = Field(_D.hddm_a_warning_confidence, description="HDDM_A's warning confidence")
    label_lag_max: float = Field(_D.label_lag_max, description="seconds; a quality window whose median label lag "
                                 "exceeds it raises a data_quality alert (0 = off)")  # fmt: skip
    label_coverage_min: float = Field(_D.label_coverage_min, description="share of stored predictions labeled; "
                                      "below it a data_quality alert (0 = off)")  # fmt: skip

    models: dict[str, ModelSettings] = Field(
        default_factory=dict, description="per-model config: the config file's [models.NAME] tables (README: Settings)"
    )

    @field_validator(
        "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
        "redis_username", "redis_password", "redis_ssl_ca_certs", "redis_ssl_certfile", "redis_ssl_keyfile",
        "redis_sentinel_password", mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``VAR=`` (as `driftstream settings` prints an unset one, and as manifests often set one) is unset:
        an empty certificate path would otherwise be opened."""
        return None if value == "" else value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _strip_scheme(cls, value: str) -> str:
        return ",".join(s.strip().removeprefix("kafka://") for s in value.split(",") if s.strip())

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://, e.g. redis://localhost:6379/0")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        unknown = unknown_variables()
        if unknown:
            raise ValueError("; ".join(f"{name} names no setting" + _suggest(name.removeprefix(ENV_PREFIX).lower(),
                                                                          ENV_PREFIX) for name in unknown))
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"{CONFIG_ENV}={config_file}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _detection_is_valid(self) -> Settings:
        for model in (None, *self.models):
            try:
                config = self.monitor_config(model)
                for kind in ("numeric", "categorical"):  # the lines its budget gives, so they fail here
                    budgeted(config, len(self.segment_specs(model)) if model else 0, kind)
                if model is not None:
                    self.quality_spec(model)  # expected values and floors name known metrics
            except ValueError as exc:
                where = "" if model is None else f" of model {model!r}"
                raise ValueError(f"detection settings{where}: {exc}") from exc
        return self

    def monitor_config(self, model: str | None = None) -> MonitorConfig:
        """The detection config, with ``model``'s own budget and event rate when the config file sets them."""
        values = {field.name: getattr(self, field.name) for field in fields(MonitorConfig)}
        own = self.models.get(model) if model is not None else None
        if own is not None:
            for name in ("false_alarm_budget", "event_rate", "stale_after"):
                if getattr(own, name) is not None:
                    values[name] = getattr(own, name)
        return MonitorConfig(**values)

    def retrain_config(self) -> RetrainConfig:
        return RetrainConfig(tuple(self.retrain_on), self.retrain_severity, self.retrain_cooldown)

    def quality_spec(self, model: str) -> QualitySpec:
        """The model's own quality settings ([models.NAME] task, expected values, floors)."""
        own = self.models.get(model)
        if own is None:
            return QualitySpec()
        return QualitySpec(task=own.task, positive_class=own.positive_class, expected=dict(own.quality_expected),
                           floors=dict(own.quality_floors), score_threshold=own.score_threshold)  # fmt: skip

    def feature_kinds(self, model: str) -> dict[str, FeatureKind]:
        config = self.models.get(model)
        return dict(config.features) if config else {}

    def segment_specs(self, model: str) -> tuple[tuple[str, ...], ...]:
        config = self.models.get(model)
        return config.segment_specs() if config else ()

    def constraints(self, model: str) -> dict[str, Constraint]:
        config = self.models.get(model)
        return config.constraint_objects() if config else {}

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka client settings (producer, admin)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
            # librdkafka logs every failed connection attempt to stderr: hundreds of lines while a
            # broker is away, which the errors raised already say in one. DEBUG shows them.
            "logger": librdkafka_logger(self.log_level),
        }
        if self.kafka_security_protocol.startswith("SASL"):
            config.update(
                {
                    "sasl.mechanism": self.kafka_sasl_mechanism,
                    "sasl.username": self.kafka_sasl_username or "",
                    "sasl.password": self.kafka_sasl_password or "",
                }
            )
        for key, value in (
            ("ssl.ca.location", self.kafka_ssl_cafile),
            ("ssl.certificate.location", self.kafka_ssl_certfile),
            ("ssl.key.location", self.kafka_ssl_keyfile),
        ):
            if value:
                config[key] = value
        return config

    def redis_url_with_auth(self) -> str:
        """The Redis URL, with ``redis_password`` put in when the URL has none."""
        if not self.redis_password or "@" in self.redis_url.split("//", 1)[-1].split("/", 1)[0]:
            return self.redis_url
        scheme, rest = self.redis_url.split("//", 1)
        return f"{scheme}//:{quote(self.redis_password, safe='')}@{rest}"


def describe_settings() -> str:
    """One line per setting: its environment variable, default and meaning."""
    lines = []
    for name, info in Settings.model_fields.items():
        if name == "models":
            continue
        default = _env_text(info.default) or "-"
        note = f"  {info.description}" if info.description else ""
        lines.append(f"DRIFTSTREAM_{name.upper()}={default}{note}")
    return "\n".join(lines)


def librdkafka_logger(level: str) -> logging.Logger:
    """Where the librdkafka clients log (``logger`` of their config): silent but for DEBUG."""
    logger = logging.getLogger("streams.librdkafka")
    logger.setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.CRITICAL)
    return logger


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """The DRIFTSTREAM_* environment variables that name no setting (typos), sorted."""
    environ = dict(os.environ) if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(name for name in environ if name.upper().startswith(ENV_PREFIX)
                  and name.upper() not in known and not name.upper().startswith(OTHER_VARIABLES))  # fmt: skip


def _suggest(name: str, prefix: str = "", within: type[BaseModel] | None = None) -> str:
    close = difflib.get_close_matches(name, list((within or Settings).model_fields), n=1, cutoff=0.75)
    return f" (did you mean {prefix}{close[0].upper() if prefix else close[0]}?)" if close else ""


def settings_error(exc: Exception) -> str:
    """One line saying which settings are wrong and why, for an error raised by ``Settings()``."""
    if not isinstance(exc, ValidationError):
        # pydantic-settings: 'error parsing value for field "numeric_tests" from source "EnvSettingsSource"'
        found = re.search(r'error parsing value for field "(\w+)" from source "EnvSettingsSource"', str(exc))
        if found:
            variable = ENV_PREFIX + found.group(1).upper()
            value = next((v for k, v in os.environ.items() if k.upper() == variable), "")
            return (f"{variable}={value}: not JSON; lists and tables are JSON in the environment, e.g. "
                    f"""{ENV_PREFIX}NUMERIC_TESTS='["psi","ks"]'""")
        return " ".join(str(exc).split())
    problems = []
    config_file = os.environ.get(CONFIG_ENV)
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if not loc:
            problems.append(message)
            continue
        name = loc[0]
        variable = ENV_PREFIX + name.upper()
        if error["type"] == "extra_forbidden":
            where = f"{CONFIG_ENV}={config_file}: " if config_file else ""
            nested = len(loc) == 3 and name == "models"  # [models.NAME] key
            problems.append(f"{where}{'.'.join(loc)} names no setting"
                            + _suggest(loc[-1], within=ModelSettings if nested else None))  # fmt: skip
        elif any(key.upper() == variable for key in os.environ) and len(loc) == 1:
            value = "***" if name in SECRETS else _mask_url(str(error.get("input", "")))
            problems.append(f"{variable}={value}: {message}")
        elif config_file:
            problems.append(f"{CONFIG_ENV}={config_file}: {'.'.join(loc)}: {message}")
        else:
            problems.append(f"{'.'.join(loc)}: {message}")
    return "; ".join(problems)


def _mask_url(value: str) -> str:
    """A URL with any password in it replaced by ***."""
    scheme, slashes, rest = value.partition("//")
    if not slashes:
        return value
    hostpart, slash, path = rest.partition("/")
    userinfo, at, host = hostpart.rpartition("@")
    if not at:
        return value
    user = userinfo.split(":", 1)[0]
    return f"{scheme}//{user}:***@{host}{slash}{path}"


def _env_text(value: Any) -> str:
    """A value as the environment gives it: JSON for lists and tables, true/false, '' for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def effective_settings(settings: Settings) -> list[tuple[str, str, str, str]]:
    """Per setting, in declaration order: its variable, the value in force (as the environment
    takes it, secrets masked), where it came from (env, file or default) and its meaning."""
    environ = {key.upper() for key in os.environ}
    in_file: set[str] = set()
    config_file = os.environ.get(CONFIG_ENV)
    if config_file:
        with open(config_file, "rb") as handle:
            in_file = set(tomllib.load(handle))
    rows = []
    for name, info in Settings.model_fields.items():
        variable = ENV_PREFIX + name.upper()
        value = getattr(settings, name)
        if name == "models":
            value = {model: own.model_dump(exclude_defaults=True) for model, own in value.items()}
        text = _env_text(value)
        if name in SECRETS and value:
            text = "***"
        elif name == "redis_url":
            text = _mask_url(text)
        source = "env" if variable in environ else "file" if name in in_file else "default"
        rows.append((variable, text, source, info.description or ""))
    return rows


def show_settings(settings: Settings) -> str:
    """``effective_settings`` as shell lines: VARIABLE=value  # meaning [env|file]."""
    lines = []
    for variable, text, source, description in effective_settings(settings):
        where = "" if source == "default" else f" [{source}]"
        lines.append(f"{variable}={shlex.quote(text) if text else ''}  # {description}{where}")
    return "\n".join(lines)
