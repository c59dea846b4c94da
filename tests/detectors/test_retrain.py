"""The retrain policy: which alerts request a retraining, the cooldown, repeats and its state."""

from __future__ import annotations

import msgpack
import pytest

from detectors import SnapshotError
from detectors.retrain import RetrainConfig, RetrainPolicy, SeenAlert

T0 = 1.8e9


def alert(alert_id: str, kind: str = "concept_drift", status: str = "firing", severity: str = "critical",
          feature: str | None = None, at: float = T0, start: float = T0 - 600, version: str | None = "v2",
          segment: str = "") -> SeenAlert:  # fmt: skip
    return SeenAlert(alert_id, kind, status, severity, version, feature, segment, "ddm", start, at, "it changed")


def test_a_critical_concept_drift_requests_a_retraining_naming_what_fires_with_it() -> None:
    policy = RetrainPolicy("churn", RetrainConfig())
    assert policy.observe(alert("f2", "data_drift", feature="f2", start=T0 - 900)) is None  # one feature: no
    assert policy.observe(alert("c0", "data_drift", feature="c0", start=T0 - 800)) is None
    assert policy.observe(alert("w", "performance", severity="warning")) is None  # below the severity
    outcome, request = policy.observe(alert("cd", start=T0 - 600))  # type: ignore[misc]
    assert outcome == "published"
    assert request.alert_ids == ("cd", "f2", "c0")  # the trigger, then the critical alerts firing, oldest first
    assert request.since == T0 - 600 and request.version == "v2" and request.model == "churn"
    assert request.reason.startswith("Retrain churn version v2: the relation of its inputs to the labels changed "
                                     "(concept_drift, critical, ddm); 2 more critical alert(s) firing: it changed")
    # Deterministic: the same model and trigger give the same id, another trigger another.
    again = RetrainPolicy("churn", RetrainConfig()).observe(alert("cd"))
    other = RetrainPolicy("churn", RetrainConfig()).observe(alert("cd2"))
    assert again is not None and other is not None
    assert again[1].request_id == request.request_id != other[1].request_id
    assert len(request.request_id) == 32


def test_dataset_drift_triggers_and_resolved_alerts_leave_the_list() -> None:
    policy = RetrainPolicy("churn", RetrainConfig())
    policy.observe(alert("f2", "data_drift", feature="f2"))
    policy.observe(alert("c0", "data_drift", feature="c0"))
    policy.observe(alert("c0-end", "data_drift", status="resolved", feature="c0"))
    decision = policy.observe(alert("ds", "data_drift", version=None))  # model-level: dataset drift
    assert decision is not None and decision[1].alert_ids == ("ds", "f2") and decision[1].version is None


def test_one_request_per_cooldown_and_repeats_change_nothing() -> None:
    policy = RetrainPolicy("churn", RetrainConfig(cooldown=3600))
    first = policy.observe(alert("a", at=T0))
    assert first is not None and first[0] == "published"
    assert policy.observe(alert("a", at=T0)) is None  # the same alert read again (an upstream replay)
    suppressed = policy.observe(alert("b", "performance", at=T0 + 3599))
    assert suppressed is not None and suppressed[0] == "suppressed"
    later = policy.observe(alert("c", at=T0 + 3600))
    assert later is not None and later[0] == "published"


def test_types_and_severity_are_configurable() -> None:
    only_performance = RetrainPolicy("m", RetrainConfig(on=("performance",), severity="warning"))
    assert only_performance.observe(alert("cd")) is None
    decision = only_performance.observe(alert("p", "performance", severity="warning"))
    assert decision is not None and decision[0] == "published"
    off = RetrainPolicy("m", RetrainConfig(on=()))
    assert off.observe(alert("cd")) is None
    with pytest.raises(ValueError, match="retrain_on: 'data_quality' is not one of"):
        RetrainConfig(on=("data_quality",))
    with pytest.raises(ValueError, match="retrain_cooldown must be >= 0"):
        RetrainConfig(cooldown=-1)
    with pytest.raises(ValueError, match="retrain_severity"):
        RetrainConfig(severity="page")


def test_the_state_round_trips_and_a_restored_policy_decides_alike() -> None:
    config = RetrainConfig(cooldown=3600)
    policy = RetrainPolicy("churn", config)
    policy.observe(alert("f2", "data_drift", feature="f2"))
    policy.observe(alert("a", at=T0))
    restored = RetrainPolicy.restore(msgpack.unpackb(msgpack.packb(policy.snapshot())), config)
    assert restored == policy
    for twin in (policy, restored):
        assert twin.observe(alert("a", at=T0)) is None
        assert twin.observe(alert("b", at=T0 + 10)) == ("suppressed", twin._request(alert("b", at=T0 + 10)))
    with pytest.raises(SnapshotError, match="version"):
        RetrainPolicy.restore({"v": 99}, config)
    with pytest.raises(SnapshotError, match="malformed"):
        RetrainPolicy.restore({"v": 1, "model": "m", "seen": [], "firing": [[1, 2]], "last_request": None}, config)


def test_memory_is_bounded_whatever_the_alerts() -> None:
    policy = RetrainPolicy("m", RetrainConfig())
    for i in range(3000):
        policy.observe(alert(f"x{i}", "data_drift", feature=f"f{i}"))
    assert len(policy.seen) == 256 and len(policy.firing) == 500
    decision = policy.observe(alert("cd"))
    assert decision is not None and len(decision[1].alert_ids) == 50
