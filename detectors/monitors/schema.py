"""The inputs' schema: features that stop arriving, appear, change kind, or break their constraints.

Many model drops are upstream breakage, not drift: a renamed column, a job that stopped filling
one, strings arriving in a numeric column. Every drift test stays quiet or misfires on those (no
values means no drift; a string is only an "invalid" value to a numeric feature's monitor), so
this watches the whole model's inputs as JSON: which features each event carries and the JSON type
(number, string, boolean) of each value.

It judges tumbling windows of ``window_size`` of the model's events by event index (window k is
events ``[k w, (k+1) w)``), so the same stream cut into other batches gives the same alerts. Its
reference schema is the baseline's (its features only; each one's missing share from its
``null_rate``, its type from its kind) or is learnt from the model's first ``reference_size`` events
(each feature with a value there, how often it was missing, how many of its values were of each
type). Each check raises ``data_quality`` alerts (``feature``: the feature, ``detector``: the check):

* ``missing_feature``: a reference feature absent or null in most of a window (critical once it
  stopped arriving: absent or null in 99% of it);
* ``new_feature``: a feature the reference never had, present in a share of a window;
* ``kind_change``: a share of a feature's values of another JSON type than the reference's
  (strings arriving in a numeric feature, numbers in a categorical one); critical from half;
* ``constraint``: explicit per-feature rules from the config (``Constraint``: min, max, allowed
  values, not null), in the manner of whylogs constraints or Great Expectations expectations.
  They need no reference: they apply from event 0.

The first three start with the first window after the reference (from event 0 with a baseline);
under a false-alarm budget their lines are also the share a stable window crosses with the
budget's per-window probability (``nulls.share_rise_line``). Each (feature, check) fires when a
window crosses its line, escalates once from warning to critical, and resolves at the first
window back under it. Memory is bounded whatever the input: at most ``max_features`` features are
learnt, and at most ``max_features`` new ones tracked per window (the first seen; the rest counted
in ``untracked``), besides the constrained ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors import SnapshotError
from detectors.base import Severity
from detectors.columns import JSON_TYPES, Column, FeatureKind
from detectors.config import MonitorConfig
from detectors.monitors.base import PREDICTION, Alert
from detectors.nulls import share_rise_line
from detectors.policy import Status
from detectors.reference import NumericReference, Reference

SNAPSHOT_VERSION = 1
ALERT_TYPE = "data_quality"
MISSING_FEATURE = "missing_feature"
NEW_FEATURE = "new_feature"
KIND_CHANGE = "kind_change"
CONSTRAINT = "constraint"
CHECKS = (CONSTRAINT, KIND_CHANGE, MISSING_FEATURE, NEW_FEATURE)  # sorted: alerts of one event come in this order
STOPPED_SHARE = 0.99  # a feature absent or null in this much of a window stopped arriving: critical
KIND_CRITICAL_SHARE = 0.5  # half of a feature's values of another type: critical

#: Counts per window of a constraint's broken rules (by index), then of the rows breaking any.
RULES = ("below_min", "above_max", "not_number", "not_allowed", "null")
_ANY = len(RULES)
_TYPES = len(JSON_TYPES)  # codes of Column.json_types(): 0 missing, 1 number, 2 string, 3 bool, 4 other
_PLURALS = ("missing values", "numbers", "strings", "booleans", "lists or objects")
_KIND_TYPES: dict[str, int] = {"numeric": 1, "categorical": 2, "boolean": 3}
_SEVERITIES = ("warning", "critical")


def _share(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a share in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Constraint:
    """Explicit rules one feature's values must keep (from the config file).

    A row breaks it when its value is below ``min`` or above ``max`` (a present value that is not a
    number breaks them too), not in ``allowed`` (compared by text: booleans as true/false, numbers by
    their text, as ``columns.category_text``), or null or absent with ``not_null``. A window whose
    share of breaking rows is over ``max_share`` warns; from ``critical_share`` it is critical.
    """

    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    not_null: bool = False
    max_share: float = 0.0
    critical_share: float = 0.1

    def __post_init__(self) -> None:
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):  # fmt: skip
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min must be <= max ({self.max!r}), got {self.min!r}")
        if self.allowed is not None:
            if isinstance(self.allowed, str) or not isinstance(self.allowed, (tuple, list)) or not self.allowed \
                    or not all(isinstance(value, str) and value for value in self.allowed):  # fmt: skip
                raise ValueError(f"allowed must be a non-empty list of non-empty strings, got {self.allowed!r}")
            object.__setattr__(self, "allowed", tuple(self.allowed))  # a list from a config file: hashable
        if not isinstance(self.not_null, bool):
            raise ValueError(f"not_null must be true or false, got {self.not_null!r}")
        # Floats whatever the config file wrote (0 or 0.0): alerts and snapshots read the same either way.
        object.__setattr__(self, "max_share", _share(self.max_share, "max_share"))
        object.__setattr__(self, "critical_share", _share(self.critical_share, "critical_share"))
        for name in ("min", "max"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if self.critical_share < self.max_share:
            raise ValueError(f"critical_share must be >= max_share ({self.max_share!r}), got {self.critical_share!r}")
        if self.min is None and self.max is None and self.allowed is None and not self.not_null:
            raise ValueError("a constraint needs at least one rule: min, max, allowed or not_null")

    @property
    def ranged(self) -> bool:
        return self.min is not None or self.max is not None

    def plain(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "allowed": None if self.allowed is None else list(self.allowed),
                "not_null": self.not_null, "max_share": self.max_share, "critical_share": self.critical_share}


@dataclass(frozen=True)
class _Feature:
    """One feature of the reference schema."""

    rows: int  # events the reference saw
    missing: int  # of them, absent or null
    type: int  # the JSON type its values have (a code of Column.json_types())
    present: int
    other: int  # present values of another type than ``type``
    types: tuple[int, ...] | None  # learnt: present values of each type (number, string, bool, other); baseline: None

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def other_share(self) -> float:
        return self.other / self.present if self.present else 0.0

    @classmethod
    def learnt(cls, rows: int, types: tuple[int, ...], declared: FeatureKind | None) -> _Feature:
        present = sum(types)
        # The declared kind's type wins; else the most common (ties: number, string, bool, other).
        code = _KIND_TYPES.get(declared or "") or 1 + int(np.argmax(types))
        return cls(rows, rows - present, code, present, present - types[code - 1], types)

    @classmethod
    def baseline(cls, reference: Reference, declared: FeatureKind | None) -> _Feature:
        rows = int(reference.summary["count"])
        missing = round(float(reference.summary["null_rate"]) * rows)
        code = _KIND_TYPES.get(declared or "") or (1 if isinstance(reference, NumericReference) else 2)
        return cls(rows, missing, code, rows - missing, 0, None)

    def plain(self) -> dict[str, Any]:
        """What an alert tells of it."""
        out: dict[str, Any] = {"type": JSON_TYPES[self.type], "rows": self.rows, "missing_share": self.missing_share,
                               "other_share": self.other_share}  # fmt: skip
        if self.types is not None:
            out["types"] = dict(zip(JSON_TYPES[1:], self.types, strict=True))
        return out


class _Batch:
    """One batch's columns, each typed at most once."""

    def __init__(self, features: dict[str, Column], size: int, constraints: dict[str, Constraint],
                 allowed: dict[str, frozenset[str]]) -> None:  # fmt: skip
        self.features, self.size = features, size
        self.constraints, self.allowed = constraints, allowed
        self._types: dict[str, np.ndarray] = {}
        self._rules: dict[str, np.ndarray] = {}

    def types(self, name: str) -> np.ndarray:
        found = self._types.get(name)
        if found is None:
            found = self._types[name] = self.features[name].json_types()
        return found

    def rules(self, name: str) -> np.ndarray:
        """(len(RULES) + 1, rows) booleans: which rows break each rule of ``name``'s constraint, then any."""
        found = self._rules.get(name)
        if found is None:
            found = self._rules[name] = self._broken(name)
        return found

    def _broken(self, name: str) -> np.ndarray:
        constraint = self.constraints[name]
        out = np.zeros((len(RULES) + 1, self.size), np.bool_)
        column = self.features.get(name)
        if column is None:  # absent from every event of the batch
            out[4] = out[_ANY] = constraint.not_null
            return out
        types = self.types(name)
        present = types != 0
        if constraint.ranged:
            numbers = types == 1
            if numbers.any():
                values = column.numeric()[0]
                if constraint.min is not None:
                    np.logical_and(numbers, values < constraint.min, out=out[0])
                if constraint.max is not None:
                    np.logical_and(numbers, values > constraint.max, out=out[1])
            np.logical_and(present, ~numbers, out=out[2])
        if constraint.allowed is not None and present.any():
            codes, labels, _ = column.coded("categorical")
            allowed = self.allowed[name]
            ok = np.fromiter((label in allowed for label in labels), np.bool_, len(labels))
            if ok.size:  # missing rows (code -1, or the text 'nan' of a typed column's NaN) are masked out
                np.logical_and(present, ~ok[np.maximum(codes, 0)], out=out[3])
        if constraint.not_null:
            np.logical_not(present, out=out[4])
        np.logical_or.reduce(out[:_ANY], axis=0, out=out[_ANY])
        return out


class SchemaMonitor:
    """The whole model's inputs against their reference schema and constraints, window by window.

    ``kinds``: declared feature kinds (a declared kind's type wins over the reference's);
    ``baseline``: references by feature (their features are the reference schema; else it is learnt
    from the stream); ``constraints``: by feature; ``alpha``: the budget's per-window alpha for the
    null lines (None: budget off, the options alone).
    """

    def __init__(self, config: MonitorConfig, kinds: dict[str, FeatureKind] | None = None,
                 baseline: dict[str, Reference] | None = None, constraints: dict[str, Constraint] | None = None,
                 alpha: float | None = None) -> None:  # fmt: skip
        self.config = config
        self.kinds = dict(kinds or {})
        self.constraints = dict(sorted((constraints or {}).items()))
        for name, constraint in self.constraints.items():
            if not isinstance(constraint, Constraint):
                raise ValueError(f"constraint of {name!r} must be a Constraint, got {constraint!r}")
        self._allowed = {name: frozenset(c.allowed) for name, c in self.constraints.items() if c.allowed is not None}
        self.alpha = alpha
        self.active = config.schema_checks or bool(self.constraints)
        # The reference schema: from the baseline (its features, at most max_features, by name), else
        # learnt from the first reference_size events once seen (None until then).
        given = sorted(name for name in (baseline or {}) if name != PREDICTION)[: config.max_features]
        self.from_baseline = bool(given)
        self.reference: dict[str, _Feature] | None = None
        self.reference_rows = 0  # events the reference stands for (a baseline: its largest feature's)
        self.learning: dict[str, np.ndarray] = {}  # feature -> present values of each type, while learning
        self.learnt_rows = 0
        if given:
            assert baseline is not None
            self._set_reference({name: _Feature.baseline(baseline[name], self.kinds.get(name)) for name in given})
        self.reference_end = 0  # event index the reference ends at: checks start at the first window from it
        self.started = False  # whether an event was seen (a learnt reference starts with the first)
        self.next_index = 0  # the model's event index expected next
        self.window_start = 0  # event index of the window in progress
        self.window_rows = 0  # its rows seen (fewer than window_size after a gap: it is not judged)
        self.window_time = math.nan  # event time of its first row
        self.counts: dict[str, np.ndarray] = {}  # feature -> rows of each JSON type in the window (schema checks)
        self.new_names = 0  # of them, features the reference never had and that are not firing
        self.broken: dict[str, np.ndarray] = {}  # constrained feature -> rows breaking each rule, then any
        self.firing: dict[tuple[str, str], Severity] = {}  # (feature, check) -> severity, while firing
        self.last: dict[tuple[str, str], tuple[float, float]] = {}  # see statistics()
        self.untracked = 0  # features left untracked over max_features, counted per batch that carried them

    def _set_reference(self, features: dict[str, _Feature]) -> None:
        self.reference = features
        self.reference_rows = max((feature.rows for feature in features.values()), default=self.learnt_rows)

    # -- the stream --------------------------------------------------------

    def observe(self, features: dict[str, Column], event_index: np.ndarray, timestamps: np.ndarray) -> list[Alert]:
        """One batch of the model's events (whole model; consecutive event indices): alerts in event order."""
        size = len(event_index)
        if not self.active or not size:
            return []
        first = int(event_index[0])
        if not self.started or first != self.next_index:
            self._jump(first)
        batch = _Batch(features, size, self.constraints, self._allowed)
        width = self.config.window_size
        out: list[Alert] = []
        start = 0
        while start < size:
            end = self.window_start + width - first  # the window's end, as a row of this batch
            if self._learning():
                end = min(end, self.reference_end - first)  # the reference ends mid-window: learn up to it
            end = min(end, size)
            if not self.window_rows:
                self.window_time = float(timestamps[start])
            self._add(batch, start, end)
            self.window_rows += end - start
            if self._learning() and first + end >= self.reference_end:
                self._build_reference()
            if first + end == self.window_start + width:
                out += self._close(int(event_index[end - 1]), float(timestamps[end - 1]))
            start = end
        self.next_index = first + size
        return out

    def _jump(self, first: int) -> None:
        """Start at event ``first``: the first event seen, or after a gap (a window in progress is dropped)."""
        if not self.started and self.config.schema_checks and not self.from_baseline:
            self.reference_end = first + self.config.reference_size
        self.started = True
        # The window holding it; begun mid-window, fewer than window_size of its rows are seen: not judged.
        self.window_start, self.window_rows = first - first % self.config.window_size, 0
        self.window_time = math.nan
        self.counts.clear()
        self.broken.clear()
        self.new_names = 0

    def _learning(self) -> bool:
        return self.reference is None and self.config.schema_checks

    def _schema_window(self) -> bool:
        """Whether the window in progress is judged by the schema checks."""
        return self.config.schema_checks and self.reference is not None and self.window_start >= self.reference_end

    def _add(self, batch: _Batch, start: int, end: int) -> None:
        """Rows ``start:end`` of the batch, all in the window in progress (and in the reference or past it)."""
        if self._learning():
            self.learnt_rows += end - start
            self._count(batch, start, end, self.learning, None)
        elif self._schema_window():
            assert self.reference is not None
            self._count(batch, start, end, self.counts, self.reference)
        for name in self.constraints:
            counts = batch.rules(name)[:, start:end].sum(axis=1)
            found = self.broken.get(name)
            if found is None:
                self.broken[name] = counts
            else:
                found += counts

    def _count(self, batch: _Batch, start: int, end: int, into: dict[str, np.ndarray],
               reference: dict[str, _Feature] | None) -> None:  # fmt: skip
        """Rows of each JSON type per feature, into ``into``: the reference's features and those already
        there always; others (new ones, or while learning any) while fewer than max_features are."""
        candidates: list[str] = []
        for name in batch.features:
            if name in into or (reference is not None and name in reference):
                counts = np.bincount(batch.types(name)[start:end], minlength=_TYPES)
                found = into.get(name)
                if found is None:
                    into[name] = counts
                else:
                    found += counts
            elif name != PREDICTION:
                candidates.append(name)
        if not candidates:
            return
        if reference is None:
            room = self.config.max_features - len(into)
        else:
            # A new feature firing stays tracked: its room is kept for it from the window's start, so a
            # batch that holds it and others takes the same ones as one event at a time would.
            firing = [name for name, check in self.firing if check == NEW_FEATURE]
            for name in firing:
                if name in candidates:
                    candidates.remove(name)
                    counts = np.bincount(batch.types(name)[start:end], minlength=_TYPES)
                    if counts[0] < end - start:
                        into[name] = counts
            room = self.config.max_features - len(firing) - self.new_names
        if room <= 0:
            self.untracked += len(candidates)
            return
        seen: list[tuple[int, str, np.ndarray]] = []
        for name in candidates:
            types = batch.types(name)[start:end]
            counts = np.bincount(types, minlength=_TYPES)
            if counts[0] < end - start:  # else not seen: absent or null in every row
                seen.append((int(np.argmax(types != 0)), name, counts))
        if len(seen) > room:
            # First seen first (by event, then name), as one event at a time would take them.
            seen.sort(key=lambda item: item[:2])
            self.untracked += len(seen) - room
            seen = seen[:room]
        for _, name, counts in seen:
            into[name] = counts
        if reference is not None:
            self.new_names += len(seen)

    def _build_reference(self) -> None:
        rows = self.learnt_rows
        self._set_reference({name: _Feature.learnt(rows, tuple(int(v) for v in counts[1:]), self.kinds.get(name))
                             for name, counts in sorted(self.learning.items())})  # fmt: skip
        self.reference_rows = rows  # a reference of no feature at all still saw these events
        self.learning = {}

    # -- judging a window ----------------------------------------------------

    def _close(self, index: int, end_time: float) -> list[Alert]:
        """Judge the window that event ``index`` completed, and start the next."""
        width = self.config.window_size
        out: list[tuple[str, str, Alert]] = []
        self.last = {}
        if self.window_rows == width:  # else it began before a gap: not all of it was seen
            at = (index, self.window_time, end_time)
            if self._schema_window():
                self._judge_schema(at, out)
            for name, constraint in self.constraints.items():
                self._judge_constraint(name, constraint, at, out)
        self.window_start += width
        self.window_rows = 0
        self.window_time = math.nan
        self.counts = {}
        self.broken = {}
        self.new_names = 0
        out.sort(key=lambda item: item[:2])
        return [alert for _, _, alert in out]

    def _null(self, hits: int, rows: int, window: int) -> float:
        """The rise over the reference's share that a stable window crosses with probability alpha."""
        if self.alpha is None:
            return -math.inf
        return share_rise_line(self.alpha, hits, rows, window)

    def _judge_schema(self, at: tuple[int, float, float], out: list[tuple[str, str, Alert]]) -> None:
        assert self.reference is not None
        config, width = self.config, self.config.window_size
        empty = np.zeros(_TYPES, np.int64)
        for name, feature in self.reference.items():
            counts = self.counts.get(name, empty)
            present = int(counts[1:].sum())  # a batch without the feature recorded nothing for its rows
            # missing_feature: the option's rise (a line past all missing is all missing) or the null line.
            share = (width - present) / width
            key = (name, MISSING_FEATURE)
            option = min(feature.missing_share + config.missing_feature_share, 1.0)
            if share >= option or key in self.firing:
                line = max(option, feature.missing_share + self._null(feature.missing, feature.rows, width))
                severity = _level(share, line, STOPPED_SHARE)
                self._verdict(key, severity, share, line, STOPPED_SHARE, at, counts, feature, out)
            # kind_change: values of another type than the reference's, over its own share of them.
            key = (name, KIND_CHANGE)
            other = present - int(counts[feature.type])
            share = other / present if present else 0.0
            option = feature.other_share + config.kind_change_share
            if share >= option or key in self.firing:
                null = self._null(feature.other, feature.present, present) if present else -math.inf
                line = max(option, feature.other_share + null)
                severity = _level(share, line, KIND_CRITICAL_SHARE)
                self._verdict(key, severity, share, line, KIND_CRITICAL_SHARE, at, counts, feature, out)
        news = {name for name in self.counts if name not in self.reference}
        news.update(name for name, check in self.firing if check == NEW_FEATURE)
        for name in sorted(news):
            counts = self.counts.get(name, empty)
            share = int(counts[1:].sum()) / width
            key = (name, NEW_FEATURE)
            line = max(config.new_feature_share, self._null(0, self.reference_rows, width))
            self._verdict(key, "warning" if share >= line else None, share, line, math.inf, at, counts, None, out)

    def _judge_constraint(self, name: str, constraint: Constraint, at: tuple[int, float, float],
                          out: list[tuple[str, str, Alert]]) -> None:  # fmt: skip
        width = self.config.window_size
        counts = self.broken.get(name)
        if counts is None:
            counts = np.zeros(len(RULES) + 1, np.int64)
        share = int(counts[_ANY]) / width
        severity: Severity | None = None
        if share > constraint.max_share:
            severity = "critical" if share >= constraint.critical_share else "warning"
        self._verdict((name, CONSTRAINT), severity, share, constraint.max_share, constraint.critical_share, at,
                      counts, None, out)  # fmt: skip

    def _verdict(self, key: tuple[str, str], severity: Severity | None, statistic: float, line: float,
                 critical: float, at: tuple[int, float, float], counts: np.ndarray, feature: _Feature | None,
                 out: list[tuple[str, str, Alert]]) -> None:  # fmt: skip
        """A judged window of one (feature, check): fire, escalate or resolve, as the alert policy does."""
        was = self.firing.get(key)
        status: Status | None = None
        if severity is not None:
            if was != severity and was != "critical":
                status, self.firing[key] = "firing", severity
        elif was is not None:
            status, severity = "resolved", was
            del self.firing[key]
        if key in self.firing or key[1] == CONSTRAINT or status is not None:
            self.last[key] = (float(statistic), float(line))
        if status is None:
            return
        assert severity is not None
        threshold = max(line, critical) if status == "firing" and severity == "critical" else line
        out.append((*key, self._alert(key, status, severity, statistic, threshold, at, counts, feature)))

    def _alert(self, key: tuple[str, str], status: Status, severity: Severity, statistic: float, threshold: float,
               at: tuple[int, float, float], counts: np.ndarray, feature: _Feature | None) -> Alert:  # fmt: skip
        name, check = key
        index, start, end = at
        width = self.config.window_size
        firing = status == "firing"
        reference: dict[str, Any]
        current: dict[str, Any]
        if check == CONSTRAINT:
            constraint = self.constraints[name]
            broken = int(counts[_ANY])
            reference = constraint.plain()
            current = {"broken": broken, "rows": width, "share": statistic,
                       **{rule: int(n) for rule, n in zip(RULES, counts, strict=False)}}  # fmt: skip
            allowed = f"{statistic:.1%}, allowed {constraint.max_share * 100:g}%"
            if firing:
                message = (f"feature {name!r} broke its constraints in {broken} of the last {width} events "
                           f"({allowed}): {_rules_text(constraint, counts)}")  # fmt: skip
            else:
                message = (f"feature {name!r} keeps its constraints again: {broken} of the last {width} events "
                           f"broke them ({allowed})")  # fmt: skip
        else:
            present = int(counts[1:].sum())
            types = {JSON_TYPES[code]: int(counts[code]) for code in range(1, _TYPES)}
            current = {"rows": width, "present": present, "missing": width - present, "types": types}
            if feature is None:  # new_feature
                reference = {"features": len(self.reference or {}), "rows": self.reference_rows}
                current["present_share"] = statistic
                if firing:
                    message = (f"new feature {name!r}, not in the reference schema: present in {present} of the last "
                               f"{width} events ({statistic:.1%})")  # fmt: skip
                else:
                    message = (f"new feature {name!r} present in {present} of the last {width} events "
                               f"({statistic:.1%}), under {threshold:.1%} again")  # fmt: skip
            else:
                reference = feature.plain()
                reference_share = f"{feature.missing_share:.1%} in the reference"
                if check == MISSING_FEATURE:
                    current["missing_share"] = statistic
                    counted = f"absent or null in {width - present} of the last {width} events"
                    if not firing:
                        message = f"feature {name!r} is arriving again: {counted} ({statistic:.1%}; {reference_share})"
                    elif severity == "critical":
                        message = f"feature {name!r} stopped arriving: {counted} ({reference_share})"
                    else:
                        message = f"feature {name!r} is mostly missing: {counted} ({statistic:.1%}; {reference_share})"
                else:
                    message = self._kind_message(name, feature, firing, counts, present, statistic, current)
        return Alert(
            ALERT_TYPE, status, severity, name, check, float(statistic), float(threshold),
            None, index, width, start, end, reference, current, message, detectors=(check,),
        )  # fmt: skip

    def _kind_message(self, name: str, feature: _Feature, firing: bool, counts: np.ndarray, present: int,
                      statistic: float, current: dict[str, Any]) -> str:  # fmt: skip
        width = self.config.window_size
        others = [code for code in range(1, _TYPES) if code != feature.type and counts[code]]
        other = sum(int(counts[code]) for code in others)
        was = _PLURALS[feature.type]
        current.update(other=other, other_share=statistic)
        if not firing:
            return (f"feature {name!r} is back to {was}: {other} of its {present} values in the last {width} events "
                    f"are of another kind ({statistic:.1%})")  # fmt: skip
        most = max(others, key=lambda code: (int(counts[code]), -code))
        current["most_seen"] = JSON_TYPES[most]
        what = _PLURALS[most] if len(others) == 1 else f"of another kind, most of them {_PLURALS[most]}"
        usual = f" ({feature.other_share:.1%} of other kinds)" if feature.other else ""
        return (f"feature {name!r} changed kind: {other} of its {present} values in the last {width} events are "
                f"{what}, it was {was} in the reference{usual}")  # fmt: skip

    def statistics(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(feature, check) -> (statistic, line) of the last judged window, for the checks firing then or
        resolved by it and for every constrained feature (so at most as many as the features tracked)."""
        return dict(self.last)

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        reference = None
        if self.reference is not None and not self.from_baseline:
            reference = [[name, list(feature.types or ())] for name, feature in self.reference.items()]
        return {
            "v": SNAPSHOT_VERSION,
            "started": self.started,
            "next": self.next_index,
            "reference_end": self.reference_end,
            "reference_rows": self.reference_rows if reference is not None else 0,
            "reference": reference,
            "learning": [[name, _ints(counts)] for name, counts in sorted(self.learning.items())],
            "learnt_rows": self.learnt_rows,
            "window": [self.window_start, self.window_rows, None if math.isnan(self.window_time) else self.window_time],
            "counts": [[name, _ints(counts)] for name, counts in sorted(self.counts.items())],
            "new_names": self.new_names,
            "broken": [[name, _ints(counts)] for name, counts in sorted(self.broken.items())],
            "firing": [[name, check, severity] for (name, check), severity in sorted(self.firing.items())],
            "last": [[name, check, value, line] for (name, check), (value, line) in sorted(self.last.items())],
            "untracked": self.untracked,
        }

    @classmethod
    def restore(cls, data: dict[str, Any], config: MonitorConfig, kinds: dict[str, FeatureKind] | None = None,
                baseline: dict[str, Reference] | None = None, constraints: dict[str, Constraint] | None = None,
                alpha: float | None = None) -> SchemaMonitor:  # fmt: skip
        """A monitor from ``snapshot()``; with a baseline its reference is the baseline's, as when built."""
        monitor = cls(config, kinds, baseline, constraints, alpha)
        try:
            if not isinstance(data, dict) or data.get("v") != SNAPSHOT_VERSION:
                version = data.get("v") if isinstance(data, dict) else data
                raise SnapshotError(f"unknown schema snapshot version {version!r}")
            monitor.started = _flag(data["started"])
            monitor.next_index = _count(data["next"])
            monitor.reference_end = _count(data["reference_end"])
            monitor.learnt_rows = _count(data["learnt_rows"])
            if not monitor.from_baseline and data["reference"] is not None:
                rows = _count(data["reference_rows"])
                monitor._set_reference({
                    str(name): _Feature.learnt(rows, tuple(_counts(types, _TYPES - 1)), monitor.kinds.get(str(name)))
                    for name, types in sorted(data["reference"])
                })  # fmt: skip
                monitor.reference_rows = rows
            if monitor._learning():
                monitor.learning = {str(name): np.asarray(_counts(c, _TYPES), np.int64) for name, c in data["learning"]}
            window_start, window_rows, window_time = data["window"]
            monitor.window_start = _count(window_start)
            monitor.window_rows = _count(window_rows)
            monitor.window_time = math.nan if window_time is None else float(window_time)
            monitor.counts = {str(name): np.asarray(_counts(c, _TYPES), np.int64) for name, c in data["counts"]}
            monitor.new_names = _count(data["new_names"])
            monitor.broken = {str(name): np.asarray(_counts(c, len(RULES) + 1), np.int64)
                              for name, c in data["broken"] if name in monitor.constraints}  # fmt: skip
            for name, check, severity in data["firing"]:
                if check not in CHECKS or severity not in _SEVERITIES:
                    raise ValueError(f"firing {check!r} at {severity!r}")
                if check != CONSTRAINT or name in monitor.constraints:  # a constraint the config dropped is over
                    monitor.firing[(str(name), str(check))] = severity
            for name, check, value, line in data["last"]:
                if check not in CHECKS:
                    raise ValueError(f"statistic of check {check!r}")
                monitor.last[(str(name), str(check))] = (float(value), float(line))
            monitor.untracked = _count(data["untracked"])
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"malformed schema state: {exc!r}") from exc
        width = config.window_size
        if monitor.window_start % width or monitor.window_rows >= width or \
                monitor.window_start + monitor.window_rows != monitor.next_index:  # fmt: skip
            # The window in progress does not fit this config's windows (window_size changed): it is
            # dropped, and the one holding the next event is judged only from the one after.
            monitor._jump(monitor.next_index)
        if monitor.started and monitor._learning() and monitor.reference_end <= monitor.next_index:
            # Its reference cannot be learnt where the snapshot stood (schema checks were off, or it had a
            # baseline that is gone): learn it from the next reference_size events.
            monitor.reference_end = monitor.next_index + config.reference_size
            monitor.learnt_rows, monitor.learning = 0, {}
        return monitor


def _level(share: float, line: float, critical: float) -> Severity | None:
    if share < line:
        return None
    return "critical" if share >= critical else "warning"


def _rules_text(constraint: Constraint, counts: np.ndarray) -> str:
    """Counts per broken rule, e.g. ``30 below min 0, 7 null``."""
    names = (f"below min {constraint.min:g}" if constraint.min is not None else "below min",
             f"above max {constraint.max:g}" if constraint.max is not None else "above max",
             "not numbers", f"not in the {len(constraint.allowed or ())} allowed values", "null")  # fmt: skip
    return ", ".join(f"{int(n)} {name}" for name, n in zip(names, counts[:_ANY], strict=True) if n)


def _ints(counts: np.ndarray) -> list[int]:
    return [int(n) for n in counts]


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def _counts(values: object, size: int) -> list[int]:
    if not isinstance(values, (list, tuple)) or len(values) != size:
        raise ValueError(f"expected {size} counts, got {values!r}")
    return [_count(value) for value in values]
