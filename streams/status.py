"""``driftstream status``: a group's live state, read from the checkpoints in Redis.

Every partition of the events topic that has a checkpoint (``{prefix}:{app_id}:state:{topic}:*``,
found by SCAN, so it sees the partitions of every worker, and of none running) is read,
its model snapshots decoded (msgpack, never pickle) and restored as the worker would, and
:mod:`detectors.inspection` says what they hold: per model, each column's detectors with their
latest statistic against its line, and the incidents firing now.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from detectors import SnapshotError
from detectors.inspection import ColumnReading, ModelReading, read_models
from detectors.monitors.model import ModelMonitor, upgrade_snapshot
from detectors.monitors.quality import QualityMonitor
from streams import DriftstreamError
from streams.redis_client import REDIS_ERRORS
from streams.settings import Settings
from streams.state import LAYOUTS_READ, STATE_VERSION, Checkpoint, RedisStateStore, StoreUnavailable, decode


@dataclass
class LiveState:
    """The restored model monitors of a group, with what could not be read."""

    monitors: list[tuple[int, ModelMonitor]] = field(default_factory=list)  # (partition, monitor)
    partitions: list[int] = field(default_factory=list)  # partitions with a checkpoint
    problems: list[str] = field(default_factory=list)  # one line per partition or model not read
    names: set[str] = field(default_factory=set)  # every model a checkpoint holds, read or not
    # per model, what its quality monitors (labels partitions) fire now: (version, scope key, type, severity,
    # detectors)
    quality: dict[str, list[tuple[str | None, str, str, str, tuple[str, ...]]]] = field(default_factory=dict)


def redis_location(settings: Settings) -> str:
    """The Redis the settings name, without its password."""
    if settings.redis_mode == "sentinel":
        return f"sentinels {settings.redis_sentinels} (master {settings.redis_sentinel_master!r})"
    parts = urlsplit(settings.redis_url)
    if parts.password:
        user = f"{parts.username}:***@" if parts.username else ":***@"
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=user + host)
    return urlunsplit(parts)


def _glob_escaped(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def _checkpoints(settings: Settings) -> list[Checkpoint]:
    try:
        store = RedisStateStore.from_settings(settings)
    except ValueError as exc:  # a URL redis-py cannot parse
        raise DriftstreamError(f"DRIFTSTREAM_REDIS_URL {redis_location(settings)!r} is not a Redis URL: {exc}") from exc
    found: list[Checkpoint] = []
    try:
        # The events partitions (features, predictions) and the labels partitions (model quality).
        for topic in (settings.topic_events, settings.topic_labels):
            prefix = store.partition_key(topic, 0)[: -len("0")]
            partitions = set()
            async for key in store.client.scan_iter(match=_glob_escaped(prefix) + "*", count=1000):
                suffix = (key.decode() if isinstance(key, bytes) else str(key))[len(prefix) :]
                if suffix.isdigit():
                    partitions.add(int(suffix))
            found += [c for p in sorted(partitions) if (c := await store.load(topic, p)) is not None]
        return found
    except REDIS_ERRORS + (StoreUnavailable,) as exc:
        reason = str(exc.__cause__ or exc) if isinstance(exc, StoreUnavailable) else str(exc)
        raise DriftstreamError(f"cannot read the state at Redis {redis_location(settings)} (DRIFTSTREAM_REDIS_URL): "
                               f"{reason or type(exc).__name__}") from exc  # fmt: skip
    finally:
        try:
            await store.close()
        except REDIS_ERRORS:
            pass


def restore_state(settings: Settings, checkpoints: Sequence[Checkpoint], model: str | None = None) -> LiveState:
    """The model monitors the checkpoints hold (only ``model``'s when given), restored as the worker would."""
    state = LiveState()
    for checkpoint in checkpoints:
        where = f"{checkpoint.topic}[{checkpoint.partition}]"
        if checkpoint.version not in LAYOUTS_READ:
            newer = isinstance(checkpoint.version, int) and checkpoint.version > STATE_VERSION
            state.problems.append(f"{where}: layout {checkpoint.version} " + (
                "is newer than this release reads (upgrade driftstream)" if newer else "is unknown"))  # fmt: skip
            continue
        if checkpoint.topic == settings.topic_labels:
            _restore_quality(settings, checkpoint, model, state)
            continue
        state.partitions.append(checkpoint.partition)
        state.names.update(checkpoint.models)
        for name, blob in sorted(checkpoint.models.items()):
            if model is not None and name != model:
                continue
            key = name if name in settings.models else None
            try:
                data = upgrade_snapshot(decode(blob))
                monitor = ModelMonitor.restore(data, settings.monitor_config(key), settings.feature_kinds(name),
                                               segments=settings.segment_specs(name),
                                               constraints=settings.constraints(name))  # fmt: skip
            except (SnapshotError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                state.problems.append(f"{where}: model {name!r} not readable ({exc})")
                continue
            state.monitors.append((checkpoint.partition, monitor))
    return state


def _restore_quality(settings: Settings, checkpoint: Checkpoint, model: str | None, state: LiveState) -> None:
    """What the quality monitors of one labels partition fire now, as the worker would restore them."""
    where = f"{checkpoint.topic}[{checkpoint.partition}]"
    for name, blob in sorted(checkpoint.models.items()):
        if model is not None and name != model:
            continue
        key = name if name in settings.models else None
        try:
            data = decode(blob)
            quality = QualityMonitor.restore(data["quality"], settings.monitor_config(key),
                                             settings.quality_spec(name), segments=settings.segment_specs(name))
        except (SnapshotError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            state.problems.append(f"{where}: quality of model {name!r} not readable ({exc})")
            continue
        state.quality.setdefault(name, []).extend(quality.firing())


def read_state(settings: Settings, model: str | None = None) -> LiveState:
    """The group's live state from Redis; ``DriftstreamError`` (one line) when Redis cannot be read."""
    return restore_state(settings, asyncio.run(_checkpoints(settings)), model)


# -- the table -------------------------------------------------------------

_COLOUR = {"critical": "bold red", "warning": "yellow"}


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-" if value is None else str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"


def _state(severity: str | None) -> str:
    if severity is None:
        return "[green]ok[/]"
    return f"[{_COLOUR[severity]}]FIRING {severity}[/]"


def _column_rows(column: ColumnReading, show_scope: bool, show_partition: bool) -> list[list[str]]:
    subject = escape(column.subject)
    where = escape(column.scope) if column.scope else "(all)"
    partition = [str(column.partition)] if show_partition else []
    if column.reference_rows is not None:
        return [
            [
                where,
                subject,
                *partition,
                "-",
                "-",
                "-",
                f"[dim]collecting its reference: {column.reference_rows}/{column.reference_size} values[/]",
            ]
        ]
    rows = []
    for reading in column.detectors:
        statistic = _number(reading.statistic) if reading.statistic is not None else "[dim]no window yet[/]"
        rows.append([where, subject, *partition, escape(reading.name), statistic, _number(reading.line),
                     _state(reading.severity)])  # fmt: skip
        where, subject = "", ""
    return rows if show_scope else [row[1:] for row in rows]


def print_status(models: Sequence[ModelReading], out: TextIO | None = None, width: int | None = None,
                 quality: Mapping[str, Sequence[tuple[str | None, str, str, str, tuple[str, ...]]]] | None = None,
                 ) -> None:  # fmt: skip
    """One table per model: every column's detectors, statistic against line, state; then what fires now
    (``quality``: per model, what its quality monitors fire: version, scope, type, severity, detectors)."""
    console = Console(file=out, highlight=False, width=width, soft_wrap=False)
    quality = quality or {}
    for model in models:
        spans = len(model.partitions) > 1
        segmented = any(column.scope for column in model.columns)
        versions = ", ".join("-" if v is None else v for v in model.versions) or "-"
        firing = model.firing
        labels = quality.get(model.model, [])
        own = model.model_firing
        title = (
            f"[bold]{escape(model.model)}[/]: {model.events_seen:,} events, partition(s) "
            f"{', '.join(map(str, model.partitions))}, version(s) {escape(versions)}, "
            + (f"[bold red]{len(firing) + len(own) + len(labels)} alert(s) firing[/]" if firing or own or labels
               else "[green]nothing firing[/]")
        )
        console.print(title)
        table = Table(show_lines=False, pad_edge=False)
        if segmented:
            table.add_column("scope")
        table.add_column("feature")
        if spans:
            table.add_column("partition", justify="right")
        table.add_column("detector")
        table.add_column("statistic", justify="right")
        table.add_column("line", justify="right")
        table.add_column("state")
        previous = None
        for column in model.columns:
            if previous is not None and (column.scope, column.subject) != previous:
                table.add_section()
            previous = (column.scope, column.subject)
            for row in _column_rows(column, segmented, spans):
                table.add_row(*row)
        console.print(table)
        if firing or own or labels:
            console.print("[bold]firing now[/]")
            for column, alert in firing:
                where = (f"{model.model}[{column.scope}]" if column.scope else model.model) + f"/{column.subject}"
                console.print(f"  [{_COLOUR[alert.severity]}]{alert.severity:<8}[/] {alert.type:<16} "
                              f"{escape(where):<24} {escape(', '.join(alert.detectors))}")  # fmt: skip
            for subject, own_type, level, names in own:  # the whole model's own checks
                console.print(f"  [{_COLOUR[level]}]{level:<8}[/] {own_type:<16} "
                              f"{escape(model.model + '/' + subject):<24} {escape(', '.join(names))}")
            for version, scope, kind, severity, detectors in labels:  # from the labels partitions
                where = (f"{model.model}[{scope}]" if scope else model.model) + "/quality" + (
                    f" v{version}" if version is not None else "")
                console.print(f"  [{_COLOUR[severity]}]{severity:<8}[/] {kind:<16} {escape(where):<24} "
                              f"{escape(', '.join(detectors))}")  # fmt: skip
        console.print()


def status(settings: Settings, model: str | None = None, out: TextIO | None = None, width: int | None = None) -> None:
    """Print the group's status; ``DriftstreamError`` (one line) when there is nothing to show."""
    state = read_state(settings, model)
    where = (f"app id {settings.app_id!r} (DRIFTSTREAM_APP_ID, DRIFTSTREAM_STATE_PREFIX={settings.state_prefix!r}, "
             f"topic {settings.topic_events!r}) at Redis {redis_location(settings)}")  # fmt: skip
    console = Console(file=out, stderr=out is None, highlight=False, width=width)
    for problem in state.problems:
        console.print(f"[yellow]warning:[/] {escape(problem)}")
    if not state.monitors:
        if model is not None and state.partitions:
            known = ", ".join(sorted(state.names)) or "none"
            raise DriftstreamError(f"no state of model {model!r} for {where}; models there: {known}")
        raise DriftstreamError(f"no state for {where}: no worker has checkpointed yet, or another app id is meant")
    print_status(read_models(state.monitors), out, width, state.quality)
