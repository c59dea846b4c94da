"""The inputs' schema: features that stop arriving, appear, change kind, or break their constraints.

Many model drops are upstream breakage, not drift: a renamed column, a job that stopped filling
one, strings arriving in a numeric column. Every drift test stays quiet or misfires on those (no
values means no drift; a string is only an "invalid" value to a numeric feature's monitor), so
this watches the whole model's inputs as JSON: which features each event carries and the JSON type
(number, string, boolean) of each value.

It judges tumbling windows of ``window_size`` of the model's events by event index (window k is
events ``[k w, (k+1) w)``), so the same stream cut into other batches gives the same alerts. The
JSON type each feature is expected to have is always learnt from the values: the most common type
of its present values in the model's first ``reference_size`` events (with how many were of each
type), whatever the baseline or a declared kind say. The reference schema (its features and how
often each was missing) is the baseline's when one is in force (its features only; each one's
missing share from its ``null_rate``), else the one learnt from those same events (each feature with
a value there, how often it was missing). Each check raises ``data_quality`` alerts (``feature``: the
feature, ``detector``: the check):

* ``missing_feature``: a reference feature absent or null in most of a window (critical once it
  stopped arriving: absent or null in 99% of it);
* ``new_feature``: a feature the reference never had, present in a share of a window;
* ``kind_change``: a share of a feature's values of another JSON type than the learnt one (strings
  arriving in a numeric feature, numbers in a categorical one); critical from half;
* ``constraint``: explicit per-feature rules from the config (``Constraint``: min, max, allowed
  values, not null), in the manner of whylogs constraints or Great Expectations expectations.
  They need no reference: they apply from event 0.

``missing_feature`` and ``new_feature`` start with the first window after the learnt reference, or
from event 0 with a baseline; ``kind_change`` with the first window after the learning period (its
types are learnt there, with a baseline too). Under a false-alarm budget their lines are also the
share a stable window crosses with the budget's per-window probability (``nulls.share_rise_line``).
Each (feature, check) fires when a window crosses its line, escalates once from warning to critical,
and resolves at the first window back under it. ``rebase`` switches to another baseline's schema
from the next window (a feature no longer in it resolves its open alerts there; the learnt types
stay). Memory is bounded whatever the input: at most ``max_features`` features are learnt besides
the baseline's, and at most ``max_features`` new ones tracked per window (the first seen; the values
of the rest counted in ``untracked``), besides the constrained ones. ``statistics()`` reports
``new_feature`` under the one name ``NEW_FEATURES``, so its keys stay bounded whatever the input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from detectors import SnapshotError
from detectors.base import Severity
from detectors.columns import JSON_TYPES, Column, FeatureKind
from detectors.config import MonitorConfig
from detectors.monitors.base import PREDICTION, Alert
from detectors.nulls import share_rise_line
from detectors.policy import Status, window_decision
from detectors.reference import Reference

SNAPSHOT_VERSION = 2  # 2: types always learnt, the baseline's schema saved as such, a pending rebase
ALERT_TYPE = "data_quality"
MISSING_FEATURE = "missing_feature"
NEW_FEATURE = "new_feature"
KIND_CHANGE = "kind_change"
CONSTRAINT = "constraint"
CHECKS = (CONSTRAINT, KIND_CHANGE, MISSING_FEATURE, NEW_FEATURE)  # sorted: alerts of one event come in this order
#: The feature ``statistics()`` reports new_feature under: the largest share of the window's new features.
NEW_FEATURES = "__new__"
STOPPED_SHARE = 0.99  # a feature absent or null in this much of a window stopped arriving: critical
KIND_CRITICAL_SHARE = 0.5  # half of a feature's values of another type: critical
DEFAULT_CRITICAL_SHARE = 0.1  # a constraint's critical_share when not given: this or max_share, the larger

#: Counts per window of a constraint's broken rules (by index), then of the rows breaking any.
RULES = ("below_min", "above_max", "not_number", "not_allowed", "null")
_ANY = len(RULES)
_TYPES = len(JSON_TYPES)  # codes of Column.json_types(): 0 missing, 1 number, 2 string, 3 bool, 4 other
_PLURALS = ("missing values", "numbers", "strings", "booleans", "lists or objects")
_SEVERITIES = ("warning", "critical")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
#: Why an open alert resolves though its window was not judged against it.
_LEFT = "is no longer in the reference schema"
_UNTYPED = "has no learnt type to judge its kind against"
_JOINED = "is in the reference schema now"
_NO_SCHEMA = "is not judged: no reference schema is in force"


def _share(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a share in [0, 1], got {value!r}")
    return float(value)


def _number_of(text: str) -> float | None:
    """The number an allowed value's text is (as the config file's numbers are given), else None."""
    if not _JSON_NUMBER.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Constraint:
    """Explicit rules one feature's values must keep (from the config file).

    A row breaks it when its value is below ``min`` or above ``max`` (a present value that is not a
    number breaks them too), not in ``allowed``, or null or absent with ``not_null``. ``allowed``
    holds texts (the config file's values as ``columns.category_text`` writes them): a JSON number
    is allowed when an allowed text is a number equal to it (``1`` allows 1 and 1.0 alike), a string
    when its text is allowed, a boolean as ``true``/``false`` (never equal to 1 or 0). A window whose
    share of breaking rows is over ``max_share`` warns; from ``critical_share`` it is critical (not
    given: ``max(0.1, max_share)``; the value in force is stored).
    """

    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    not_null: bool = False
    max_share: float = 0.0
    critical_share: float | None = None

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
        if self.critical_share is None:
            object.__setattr__(self, "critical_share", max(DEFAULT_CRITICAL_SHARE, self.max_share))
        else:
            object.__setattr__(self, "critical_share", _share(self.critical_share, "critical_share"))
            if self.critical < self.max_share:
                raise ValueError(f"critical_share must be >= max_share ({self.max_share!r}), "
                                 f"got {self.critical_share!r}")  # fmt: skip
        for name in ("min", "max"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, float(getattr(self, name)))
        if self.min is None and self.max is None and self.allowed is None and not self.not_null:
            raise ValueError("a constraint needs at least one rule: min, max, allowed or not_null")

    @property
    def critical(self) -> float:
        """The critical share in force (``critical_share``, its default resolved)."""
        assert self.critical_share is not None
        return self.critical_share

    @property
    def ranged(self) -> bool:
        return self.min is not None or self.max is not None

    def plain(self) -> dict[str, Any]:
        return {"min": self.min, "max": self.max, "allowed": None if self.allowed is None else list(self.allowed),
                "not_null": self.not_null, "max_share": self.max_share, "critical_share": self.critical}


@dataclass(frozen=True)
class _Allowed:
    """A constraint's allowed values as looked up: texts, and the numbers among them."""

    texts: frozenset[str]
    numbers: np.ndarray

    @classmethod
    def of(cls, allowed: tuple[str, ...]) -> _Allowed:
        numbers = [number for number in map(_number_of, allowed) if number is not None]
        return cls(frozenset(allowed), np.unique(np.asarray(numbers, np.float64)))


@dataclass(frozen=True)
class _Feature:
    """One feature of the reference schema: how often it was missing, and the types learnt of it."""

    rows: int  # events its reference saw (the baseline's count, or the learning period's)
    missing: int  # of them, absent or null
    types: tuple[int, ...] | None  # present values of each type (number, string, bool, other) learnt; None: unknown

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @cached_property  # these are read per window of every feature: computed once
    def present(self) -> int:
        """Present values the types were learnt from."""
        return sum(self.types) if self.types is not None else 0

    @cached_property
    def type(self) -> int | None:
        """The expected JSON type (a code of Column.json_types()): the most common learnt (ties: number, string,
        bool, other); None when none was learnt."""
        if not self.present:
            return None
        assert self.types is not None
        return 1 + int(np.argmax(self.types))

    @cached_property
    def other(self) -> int:
        """Learnt present values of another type than ``type``."""
        code = self.type
        if code is None:
            return 0
        assert self.types is not None
        return self.present - self.types[code - 1]

    @property
    def other_share(self) -> float:
        return self.other / self.present if self.present else 0.0

    def plain(self) -> dict[str, Any]:
        """What an alert tells of it."""
        code = self.type
        out: dict[str, Any] = {"type": None if code is None else JSON_TYPES[code], "rows": self.rows,
                               "missing_share": self.missing_share, "other_share": self.other_share}  # fmt: skip
        if self.types is not None:
            out["types"] = dict(zip(JSON_TYPES[1:], self.types, strict=True))
        return out


class _Batch:
    """One batch's columns, each typed at most once."""

    def __init__(self, features: dict[str, Column], size: int, constraints: dict[str, Constraint],
                 allowed: dict[str, _Allowed]) -> None:  # fmt: skip
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
        numbers = types == 1
        if constraint.ranged:
            if numbers.any():
                values = column.numeric()[0]
                if constraint.min is not None:
                    np.logical_and(numbers, values < constraint.min, out=out[0])
                if constraint.max is not None:
                    np.logical_and(numbers, values > constraint.max, out=out[1])
            np.logical_and(present, ~numbers, out=out[2])
        if constraint.allowed is not None and present.any():
            allowed = self.allowed[name]
            ok = np.zeros(self.size, np.bool_)
            if numbers.any():  # numbers by value: 1 and 1.0 alike
                np.logical_and(numbers, np.isin(column.numeric()[0], allowed.numbers), out=ok)
            texts = present & ~numbers
            if texts.any():  # strings by their text, booleans as true/false (never 1 or 0)
                codes, labels, _ = column.coded("categorical")
                known = np.fromiter((label in allowed.texts for label in labels), np.bool_, len(labels))
                if known.size:  # missing rows (code -1) are masked out
                    ok |= texts & known[np.maximum(codes, 0)]
            np.logical_and(present, ~ok, out=out[3])
        if constraint.not_null:
            np.logical_not(present, out=out[4])
        np.logical_or.reduce(out[:_ANY], axis=0, out=out[_ANY])
        return out


#: A baseline's schema: feature -> (events its reference saw, of them absent or null).
_Schema = dict[str, tuple[int, int]]


class SchemaMonitor:
    """The whole model's inputs against their reference schema and constraints, window by window.

    ``kinds``: declared feature kinds (not used by the checks: the types are learnt from the values);
    ``baseline``: references by feature (their features are the reference schema; else it is learnt
    from the stream; ``rebase`` switches to another); ``constraints``: by feature; ``alpha``: the
    budget's per-window alpha for the null lines (None: budget off, the options alone).
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
        self._allowed = {name: _Allowed.of(c.allowed) for name, c in self.constraints.items() if c.allowed is not None}
        self.alpha = alpha
        self.active = config.schema_checks or bool(self.constraints)
        # The baseline's schema in force (its features, at most max_features, by name; None: the learnt
        # one), and the one a rebase switches to when the window in progress closes.
        self.given: _Schema | None = self._schema_of(baseline)
        self.switching = False
        self.next_given: _Schema | None = None
        # The types (and, without a baseline, the schema) learnt from the first reference_size events.
        self.learnt: dict[str, tuple[int, ...]] | None = None  # feature -> present values of each type
        self.learning: dict[str, np.ndarray] = {}  # feature -> rows of each JSON type, while learning
        self.learnt_rows = 0
        # The reference judged against (from the two above; None until there is one).
        self.reference: dict[str, _Feature] | None = None
        self.reference_rows = 0  # events the reference stands for (a baseline: its largest feature's)
        self.leaving: _Schema = {}  # features a rebase took out of it with open alerts: (rows, missing) they had
        self.reference_end = 0  # event index the learning ends at: kind_change starts at the first window from it
        self.started = False  # whether an event was seen (learning starts with the first)
        self.next_index = 0  # the model's event index expected next
        self.window_start = 0  # event index of the window in progress
        self.window_rows = 0  # its rows seen (fewer than window_size after a gap: it is not judged)
        self.window_time = math.nan  # event time of its first row
        self.counts: dict[str, np.ndarray] = {}  # feature -> rows of each JSON type in the window (schema checks)
        self.new_names = 0  # of them, features the reference never had and that are not firing
        self.broken: dict[str, np.ndarray] = {}  # constrained feature -> rows breaking each rule, then any
        self.firing: dict[tuple[str, str], Severity] = {}  # (feature, check) -> severity, while firing
        self.last: dict[tuple[str, str], tuple[float, float]] = {}  # see statistics()
        self.untracked = 0  # present values of features left untracked over max_features (learning, new ones)
        self._refresh()

    @property
    def from_baseline(self) -> bool:
        return self.given is not None

    def _schema_of(self, baseline: dict[str, Reference] | None) -> _Schema | None:
        names = sorted(name for name in (baseline or {}) if name != PREDICTION)[: self.config.max_features]
        if not names:
            return None
        assert baseline is not None
        schema: _Schema = {}
        for name in names:
            summary = baseline[name].summary
            rows = int(summary["count"])
            schema[name] = (rows, round(float(summary["null_rate"]) * rows))
        return schema

    def _refresh(self) -> None:
        """The reference from the baseline's schema in force, else the learnt one; the learnt types either way."""
        learnt = self.learnt or {}
        if self.given is not None:
            self.reference = {name: _Feature(rows, missing, learnt.get(name))
                              for name, (rows, missing) in self.given.items()}  # fmt: skip
            self.reference_rows = max(rows for rows, _ in self.given.values())
        elif self.learnt is not None:
            rows = self.learnt_rows
            self.reference = {name: _Feature(rows, rows - sum(types), types) for name, types in learnt.items()}
            self.reference_rows = rows  # a reference of no feature at all still saw these events
        else:
            self.reference, self.reference_rows = None, 0

    # -- baselines -----------------------------------------------------------

    def rebase(self, baseline: dict[str, Reference] | None) -> bool:
        """Judge against ``baseline``'s schema (None, or one of no input feature: the learnt one) from the next
        window on; returns whether the reference schema changed.

        The window in progress is judged against the schema it began with. A feature that is no longer
        in the reference resolves its open ``missing_feature`` and ``kind_change`` alerts at the next
        window judged; a new feature that now is in it, its ``new_feature`` alert. The learnt types stay.
        """
        given = self._schema_of(baseline)
        if given == (self.next_given if self.switching else self.given):
            return False
        if self.window_rows:  # switched when the window in progress closes
            self.switching = given != self.given
            self.next_given = given if self.switching else None
        else:  # no row of the window in progress seen yet: it is the next one
            self.switching, self.next_given = False, None
            self._switch(given)
        return True

    def _switch(self, given: _Schema | None) -> None:
        before = self.reference or {}
        self.given = given
        self._refresh()
        after = self.reference or {}
        for name, feature in before.items():
            if name not in after and ((name, MISSING_FEATURE) in self.firing or (name, KIND_CHANGE) in self.firing):
                self.leaving[name] = (feature.rows, feature.missing)
        self.leaving = {name: former for name, former in sorted(self.leaving.items()) if name not in after}

    def _switch_pending(self) -> None:
        if self.switching:
            given, self.switching, self.next_given = self.next_given, False, None
            self._switch(given)

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
                end = min(end, self.reference_end - first)  # the learning ends mid-window: learn up to it
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
        if not self.started and self.config.schema_checks:
            self.reference_end = first + self.config.reference_size
        self.started = True
        # The window holding it; begun mid-window, fewer than window_size of its rows are seen: not judged.
        self.window_start, self.window_rows = first - first % self.config.window_size, 0
        self.window_time = math.nan
        self.counts.clear()
        self.broken.clear()
        self.new_names = 0
        self._switch_pending()

    def _learning(self) -> bool:
        return self.learnt is None and self.config.schema_checks

    def _schema_window(self) -> bool:
        """Whether the window in progress is judged by missing_feature and new_feature: from the first with a
        baseline, else from the first after the learning."""
        if not self.config.schema_checks or self.reference is None:
            return False
        return self.given is not None or self.window_start >= self.reference_end

    def _tracking(self) -> bool:
        """Whether the window in progress counts the features' types: judged, or some schema alert is open."""
        if not self.config.schema_checks:
            return False
        return self._schema_window() or any(check != CONSTRAINT for _, check in self.firing)

    def _add(self, batch: _Batch, start: int, end: int) -> None:
        """Rows ``start:end`` of the batch, all in the window in progress (and in the learning or past it)."""
        if self._learning():
            self.learnt_rows += end - start
            given = self.given or {}
            others = sum(1 for name in self.learning if name not in given)
            self._count(batch, start, end, self.learning, given, self.config.max_features - len(given) - others)
        if self._tracking():
            # The reference's features and those with an open alert always; new ones while there is room. A
            # new feature firing stays tracked: its room is kept for it from the window's start, so a batch
            # that holds it and others takes the same ones as one event at a time would.
            always = {name for name, check in self.firing if check != CONSTRAINT}
            always.update(self.reference or ())
            room = None
            if self._schema_window():
                firing = sum(1 for _, check in self.firing if check == NEW_FEATURE)
                room = self.config.max_features - firing - self.new_names
            self.new_names += self._count(batch, start, end, self.counts, always, room)
        for name in self.constraints:
            counts = batch.rules(name)[:, start:end].sum(axis=1)
            found = self.broken.get(name)
            if found is None:
                self.broken[name] = counts
            else:
                found += counts

    def _count(self, batch: _Batch, start: int, end: int, into: dict[str, np.ndarray], always: Collection[str],
               room: int | None) -> int:  # fmt: skip
        """Rows of each JSON type per feature, into ``into``: those of ``always`` and those already there, then
        up to ``room`` others seen (None: none, nor counted as untracked). Returns how many others it took."""
        candidates: list[str] = []
        for name in batch.features:
            if name in into or name in always:
                counts = np.bincount(batch.types(name)[start:end], minlength=_TYPES)
                found = into.get(name)
                if found is None:
                    into[name] = counts
                else:
                    found += counts
            elif name != PREDICTION:
                candidates.append(name)
        if not candidates or room is None:
            return 0
        seen: list[tuple[int, str, np.ndarray]] = []
        for name in candidates:
            types = batch.types(name)[start:end]
            counts = np.bincount(types, minlength=_TYPES)
            if counts[0] < end - start:  # else not seen: absent or null in every row
                seen.append((int(np.argmax(types != 0)), name, counts))
        room = max(room, 0)
        if len(seen) > room:
            # First seen first (by event, then name), as one event at a time would take them; the values of
            # the rest are counted (per row, so whatever the batching).
            seen.sort(key=lambda item: item[:2])
            self.untracked += sum(int(counts[1:].sum()) for _, _, counts in seen[room:])
            seen = seen[:room]
        for _, name, counts in seen:
            into[name] = counts
        return len(seen)

    def _build_reference(self) -> None:
        self.learnt = {name: tuple(int(v) for v in counts[1:])
                       for name, counts in sorted(self.learning.items()) if counts[1:].any()}  # fmt: skip
        self.learning = {}
        self._refresh()

    # -- judging a window ----------------------------------------------------

    def _close(self, index: int, end_time: float) -> list[Alert]:
        """Judge the window that event ``index`` completed, and start the next."""
        width = self.config.window_size
        out: list[tuple[str, str, Alert]] = []
        self.last = {}
        if self.window_rows == width:  # else it began before a gap: not all of it was seen
            at = (index, self.window_time, end_time)
            if self._tracking():
                self._judge_schema(at, out)
            for name, constraint in self.constraints.items():
                self._judge_constraint(name, constraint, at, out)
        self.window_start += width
        self.window_rows = 0
        self.window_time = math.nan
        self.counts = {}
        self.broken = {}
        self.new_names = 0
        self._switch_pending()
        out.sort(key=lambda item: item[:2])
        return [alert for _, _, alert in out]

    def _null(self, hits: int, rows: int, window: int) -> float:
        """The rise over the reference's share that a stable window crosses with probability alpha."""
        if self.alpha is None:
            return -math.inf
        return share_rise_line(self.alpha, hits, rows, window)

    def _missing_line(self, feature: _Feature, present: int) -> tuple[float, float, float]:
        """The window's missing share, its line and the option's: the option's rise (a line past all missing is
        all missing) or the null line."""
        width = self.config.window_size
        option = min(feature.missing_share + self.config.missing_feature_share, 1.0)
        line = max(option, feature.missing_share + self._null(feature.missing, feature.rows, width))
        return (width - present) / width, line, option

    def _kind_line(self, feature: _Feature, counts: np.ndarray, present: int) -> tuple[float, float, float]:
        """The window's share of values of another type than the learnt one, its line and the option's: the
        rise over the learnt share of them."""
        code = feature.type
        other = present - int(counts[code]) if code is not None else 0
        option = feature.other_share + self.config.kind_change_share
        null = self._null(feature.other, feature.present, present) if present else -math.inf
        return other / present if present else 0.0, max(option, feature.other_share + null), option

    def _judge_schema(self, at: tuple[int, float, float], out: list[tuple[str, str, Alert]]) -> None:
        config, width = self.config, self.config.window_size
        empty = np.zeros(_TYPES, np.int64)
        reference = self.reference if self._schema_window() else None
        kinds = self.learnt is not None and self.window_start >= self.reference_end  # the types are learnt
        judged: set[tuple[str, str]] = set()
        for name, feature in (reference or {}).items():
            counts = self.counts.get(name, empty)
            present = int(counts[1:].sum())  # a batch without the feature recorded nothing for its rows
            key = (name, MISSING_FEATURE)
            judged.add(key)
            share, line, option = self._missing_line(feature, present)
            if share >= option or key in self.firing:
                severity = _level(share, line, STOPPED_SHARE)
                self._verdict(key, severity, share, line, STOPPED_SHARE, at, counts, feature, out)
            if not kinds or feature.type is None:
                continue
            key = (name, KIND_CHANGE)
            judged.add(key)
            share, line, option = self._kind_line(feature, counts, present)
            if share >= option or key in self.firing:
                severity = _level(share, line, KIND_CRITICAL_SHARE)
                self._verdict(key, severity, share, line, KIND_CRITICAL_SHARE, at, counts, feature, out)
        # Open alerts of features this window does not judge (a rebase took them out of the reference): over.
        for key in sorted(key for key in self.firing if key[1] in (MISSING_FEATURE, KIND_CHANGE) and key not in judged):
            name, check = key
            if reference is not None and name in reference:
                feature, reason = reference[name], _UNTYPED
            else:
                rows, missing = self.leaving.get(name, (0, 0))
                feature = _Feature(rows, missing, (self.learnt or {}).get(name))
                reason = _LEFT if reference is not None else _NO_SCHEMA
            counts = self.counts.get(name, empty)
            present = int(counts[1:].sum())
            if check == MISSING_FEATURE:
                share, line, option = self._missing_line(feature, present)
            else:
                share, line, option = self._kind_line(feature, counts, present)
            line = line if math.isfinite(line) else option
            self._verdict(key, None, share, line, line, at, counts, feature, out, reason)
        self.leaving = {}
        # new_feature: reported under NEW_FEATURES, the largest share of the window's new features.
        line = config.new_feature_share
        if reference is not None:
            line = max(line, self._null(0, self.reference_rows, width))
        top, reported = 0.0, False
        firing = {name for name, check in self.firing if check == NEW_FEATURE}
        news = set() if reference is None else {name for name in self.counts if name not in reference}
        for name in sorted(news | firing):
            counts = self.counts.get(name, empty)
            share = int(counts[1:].sum()) / width
            key = (name, NEW_FEATURE)
            if name in news or (reference is not None and name not in reference):
                top = max(top, share)
                reported |= self._verdict(key, "warning" if share >= line else None, share, line, math.inf, at,
                                          counts, None, out)  # fmt: skip
            else:  # in the reference now, or no reference in force: over
                reported |= self._verdict(key, None, share, line, line, at, counts, None, out,
                                          _JOINED if reference is not None else _NO_SCHEMA)  # fmt: skip
        if reported:
            self.last[(NEW_FEATURES, NEW_FEATURE)] = (float(top), float(line))

    def _judge_constraint(self, name: str, constraint: Constraint, at: tuple[int, float, float],
                          out: list[tuple[str, str, Alert]]) -> None:  # fmt: skip
        width = self.config.window_size
        counts = self.broken.get(name)
        if counts is None:
            counts = np.zeros(len(RULES) + 1, np.int64)
        share = int(counts[_ANY]) / width
        severity: Severity | None = None
        if share > constraint.max_share:
            severity = "critical" if share >= constraint.critical else "warning"
        self._verdict((name, CONSTRAINT), severity, share, constraint.max_share, constraint.critical, at,
                      counts, None, out)  # fmt: skip

    def _verdict(self, key: tuple[str, str], severity: Severity | None, statistic: float, line: float,
                 critical: float, at: tuple[int, float, float], counts: np.ndarray, feature: _Feature | None,
                 out: list[tuple[str, str, Alert]], reason: str | None = None) -> bool:  # fmt: skip
        """A judged window of one (feature, check): fire, escalate or resolve, as the alert policy does (with a
        ``reason``: resolve, the check being over for it). Returns whether its statistic is reported."""
        status: Status | None = None
        decision = window_decision(self.firing.get(key), severity)
        if decision is not None:
            status, severity = decision
            if status == "firing":
                self.firing[key] = severity
            else:
                del self.firing[key]
        reported = key in self.firing or key[1] == CONSTRAINT or status is not None
        if reported and key[1] != NEW_FEATURE:  # new features: under NEW_FEATURES (see _judge_schema)
            self.last[key] = (float(statistic), float(line))
        if status is None:
            return reported
        assert severity is not None
        threshold = max(line, critical) if status == "firing" and severity == "critical" else line
        out.append((*key, self._alert(key, status, severity, statistic, threshold, at, counts, feature, reason)))
        return reported

    def _alert(self, key: tuple[str, str], status: Status, severity: Severity, statistic: float, threshold: float,
               at: tuple[int, float, float], counts: np.ndarray, feature: _Feature | None,
               reason: str | None = None) -> Alert:  # fmt: skip
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
                seen = f"present in {present} of the last {width} events ({statistic:.1%})"
                if reason is not None:
                    message = f"feature {name!r} {reason}: {seen}"
                elif firing:
                    message = f"new feature {name!r}, not in the reference schema: {seen}"
                else:
                    message = f"new feature {name!r} {seen}, under {threshold:.1%} again"
            else:
                reference = feature.plain()
                reference_share = f"{feature.missing_share:.1%} in the reference"
                if check == MISSING_FEATURE:
                    current["missing_share"] = statistic
                    counted = f"absent or null in {width - present} of the last {width} events"
                    if reason is not None:
                        message = f"feature {name!r} {reason}: {counted} ({statistic:.1%})"
                    elif not firing:
                        message = f"feature {name!r} is arriving again: {counted} ({statistic:.1%}; {reference_share})"
                    elif severity == "critical":
                        message = f"feature {name!r} stopped arriving: {counted} ({reference_share})"
                    else:
                        message = f"feature {name!r} is mostly missing: {counted} ({statistic:.1%}; {reference_share})"
                else:
                    message = self._kind_message(name, feature, firing, counts, present, statistic, current, reason)
        return Alert(
            ALERT_TYPE, status, severity, name, check, float(statistic), float(threshold),
            None, index, width, start, end, reference, current, message, detectors=(check,),
        )  # fmt: skip

    def _kind_message(self, name: str, feature: _Feature, firing: bool, counts: np.ndarray, present: int,
                      statistic: float, current: dict[str, Any], reason: str | None) -> str:  # fmt: skip
        width = self.config.window_size
        code = feature.type
        others = [kind for kind in range(1, _TYPES) if kind != code and counts[kind]]
        other = sum(int(counts[kind]) for kind in others) if code is not None else 0
        was = _PLURALS[code] if code is not None else "the learnt type"
        current.update(other=other, other_share=statistic)
        if reason is not None:
            return (f"feature {name!r} {reason}: {other} of its {present} values in the last {width} events are "
                    f"not {was} ({statistic:.1%})")  # fmt: skip
        if not firing:
            return (f"feature {name!r} is back to {was}: {other} of its {present} values in the last {width} events "
                    f"are of another kind ({statistic:.1%})")  # fmt: skip
        most = max(others, key=lambda kind: (int(counts[kind]), -kind))
        current["most_seen"] = JSON_TYPES[most]
        what = _PLURALS[most] if len(others) == 1 else f"of another kind, most of them {_PLURALS[most]}"
        usual = f" ({feature.other_share:.1%} of other kinds)" if feature.other else ""
        return (f"feature {name!r} changed kind: {other} of its {present} values in the last {width} events are "
                f"{what}, it was {was} in the reference{usual}")  # fmt: skip

    def statistics(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(feature, check) -> (statistic, line) of the last judged window, for the checks firing then or
        resolved by it and for every constrained feature. ``new_feature`` is under the one feature
        ``NEW_FEATURES`` (the largest share of the window's new features, and its line), so the keys are
        at most the reference's features (and those leaving it) + the constrained ones + 1, whatever the
        input."""
        return dict(self.last)

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": SNAPSHOT_VERSION,
            "started": self.started,
            "next": self.next_index,
            "reference_end": self.reference_end,
            "baseline": _schema_plain(self.given),
            "pending": {"baseline": _schema_plain(self.next_given)} if self.switching else None,
            "reference": None if self.learnt is None else [[name, list(types)] for name, types in self.learnt.items()],
            "learning": [[name, _ints(counts)] for name, counts in sorted(self.learning.items())],
            "learnt_rows": self.learnt_rows,
            "leaving": _schema_plain(self.leaving) or [],
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
        """A monitor from ``snapshot()``, with the reference schema it had (a baseline's as saved).

        ``baseline`` is not used: call ``rebase`` with the baseline in force after restoring, as a live
        monitor is rebased when one is loaded, so the two carry on alike.
        """
        del baseline  # the snapshot's schema stands until rebase()
        monitor = cls(config, kinds, None, constraints, alpha)
        try:
            if not isinstance(data, dict) or data.get("v") != SNAPSHOT_VERSION:
                version = data.get("v") if isinstance(data, dict) else data
                raise SnapshotError(f"unknown schema snapshot version {version!r}")
            monitor.started = _flag(data["started"])
            monitor.next_index = _count(data["next"])
            monitor.reference_end = _count(data["reference_end"])
            monitor.given = _schema_from(data["baseline"])
            pending = data["pending"]
            if pending is not None:
                if not isinstance(pending, dict):
                    raise ValueError(f"pending rebase {pending!r}")
                monitor.switching, monitor.next_given = True, _schema_from(pending["baseline"])
            monitor.learnt_rows = _count(data["learnt_rows"])
            if data["reference"] is not None:
                monitor.learnt = {str(name): tuple(_counts(types, _TYPES - 1)) for name, types in data["reference"]}
                monitor.learnt = dict(sorted(monitor.learnt.items()))
            if monitor._learning():
                monitor.learning = {str(name): np.asarray(_counts(c, _TYPES), np.int64) for name, c in data["learning"]}
            monitor.leaving = _schema_from(data["leaving"]) or {}
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
        monitor._refresh()
        width = config.window_size
        if monitor.window_start % width or monitor.window_rows >= width or \
                monitor.window_start + monitor.window_rows != monitor.next_index:  # fmt: skip
            # The window in progress does not fit this config's windows (window_size changed): it is
            # dropped, and the one holding the next event is judged only from the one after.
            monitor._jump(monitor.next_index)
        if monitor.started and monitor._learning() and monitor.reference_end <= monitor.next_index:
            # Its types cannot be learnt where the snapshot stood (schema checks were off): learn them from
            # the next reference_size events.
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


def _schema_plain(schema: _Schema | None) -> list[list[Any]] | None:
    return None if schema is None else [[name, rows, missing] for name, (rows, missing) in sorted(schema.items())]


def _schema_from(value: object) -> _Schema | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a schema, got {value!r}")
    schema: _Schema = {}
    for name, rows, missing in value:
        if not isinstance(name, str) or _count(missing) > _count(rows):
            raise ValueError(f"schema feature {name!r} of {rows!r} rows, {missing!r} missing")
        schema[name] = (rows, missing)
    return dict(sorted(schema.items())) or None


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
