"""The retrain policy: which alerts request a retraining, the cooldown, repeats and its state."""

from __future__ import annotations

import msgpack
import pytest

from detectors import SnapshotError
from detectors.retrain import MAX_FIRING, SEEN_IDS, RetrainConfig, RetrainPolicy, SeenAlert

T0 = 1.8e9


def alert(alert_id: str, kind: str = "concept_drift", status: str = "firing", severity: str = "critical",
          feature: str | None = None, at: float = T0, start: float = T0 - 600, version: str | None = "v2",
          segment: str = "", detector: str = "ddm", detectors: tuple[str, ...] = ()) -> SeenAlert:  # fmt: skip
    return SeenAlert(alert_id, kind, status, severity, version, feature, segment, detector, start, at, "it changed",
                     detectors or (detector,))  # fmt: skip


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
    # The inputs' joint drift does not request one: a broken pipeline moves it too (missing values imputed).
    assert policy.observe(alert("pca", "data_drift", version=None, detector="pca_reconstruction")) is None
    decision = policy.observe(alert("ds", "data_drift", version=None, detector="dataset"))  # model-level
    assert decision is not None and decision[1].alert_ids[0] == "ds" and decision[1].version is None
    assert set(decision[1].alert_ids) == {"ds", "f2", "pca"}  # named among the critical alerts standing


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
    assert len(policy.seen) == SEEN_IDS and len(policy.firing) == MAX_FIRING
    decision = policy.observe(alert("cd"))
    assert decision is not None and len(decision[1].alert_ids) == 50


def test_a_trigger_held_back_by_the_cooldown_is_requested_once_it_is_over_if_it_still_fires() -> None:
    policy = RetrainPolicy("churn", RetrainConfig(cooldown=3600))
    assert policy.observe(alert("a", at=T0)) is not None
    held = policy.observe(alert("p", "performance", detector="accuracy_test", at=T0 + 60))
    assert held is not None and held[0] == "suppressed"
    assert policy.observe(alert("f1", "data_drift", feature="f1", at=T0 + 3000)) is None  # within the cooldown
    later = policy.observe(alert("f2", "data_drift", feature="f2", at=T0 + 3700))  # any alert after it
    assert later is not None and later[0] == "published" and policy.pending is None
    assert later[1].request_id == held[1].request_id and later[1].trigger == held[1].trigger
    assert later[1].alert_ids == ("p", "a", "f1", "f2")  # what stands when it is requested
    assert policy.last_request == (held[1].request_id, T0 + 3700)
    # Resolved while held back: never requested.
    quiet = RetrainPolicy("churn", RetrainConfig(cooldown=3600))
    quiet.observe(alert("a", at=T0))
    quiet.observe(alert("p", "performance", detector="accuracy_test", at=T0 + 60))
    quiet.observe(alert("p-end", "performance", "resolved", detector="accuracy_test", at=T0 + 120))
    assert quiet.pending is None and quiet.observe(alert("f2", "data_drift", feature="f2", at=T0 + 3700)) is None


def test_standing_alerts_are_tracked_per_detector_and_input_drift_whatever_the_version() -> None:
    policy = RetrainPolicy("churn", RetrainConfig())
    policy.observe(alert("ks", "data_drift", feature="f2", detector="ks", version="1"))
    policy.observe(alert("psi", "data_drift", feature="f2", detector="psi", version="1"))
    policy.observe(alert("ks-end", "data_drift", "resolved", feature="f2", detector="ks", version="2"))
    assert [alert_id for alert_id, _ in policy.firing.values()] == ["psi"]  # psi still stands, on any version
    # An incident's resolve names every detector that fired during it: all go.
    policy.observe(alert("inc", "data_drift", feature="c0", detector="ks", detectors=("adwin", "ks")))
    policy.observe(alert("inc-end", "data_drift", "resolved", feature="c0", detector="adwin",
                         detectors=("adwin", "ks")))  # fmt: skip
    policy.observe(alert("w", "data_drift", "firing", "warning", feature="f2", detector="psi"))  # de-escalated
    decision = policy.observe(alert("cd"))
    assert decision is not None and decision[1].alert_ids == ("cd",)
