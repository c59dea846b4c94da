"""``driftstream report MODEL``: one self-contained HTML file of a model's drift.

* The live state (Redis, as ``driftstream status`` reads it): per feature the reference against
  the current window (a histogram for numbers, bars for categories), each detector's latest
  statistic against its line, the alerts firing now.
* ``drift-metrics`` (each judged window's statistics with their lines): each statistic over
  recent windows with its line.
* ``drift-alerts``: the alert timeline, firing to resolved, per feature.

The topics are read with an assigned consumer (no group join: a fresh group waits 20 s on the
test broker), from the beginning or from ``hours`` ago, up to their end when the read began.
Plots are matplotlib PNGs embedded as data URIs: the file fetches nothing.
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from detectors.inspection import CategoricalShares, ColumnReading, ModelReading, NumericShares, columns_of, read_models
from detectors.inspection import shares as column_shares
from streams import DriftstreamError
from streams.settings import Settings
from streams.status import LiveState, read_state

MAX_POINTS = 600  # points per statistic's series: longer ones are thinned evenly
STALL_SECONDS = 15.0  # a topic read that makes no progress for this long stops where it is
SeriesKey = tuple[str | None, str | None, str]  # (feature or None for the prediction, version, detector)

# -- reading the topics ------------------------------------------------------


@dataclass
class TopicRead:
    """The entries of one model read from a topic, and how the read went."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0  # messages read (every model's)
    complete: bool = True  # False: it stalled before the end it aimed at


def _kafka_error(settings: Settings, exc: KafkaException) -> DriftstreamError:
    error = exc.args[0] if exc.args else exc
    text = error.str() if hasattr(error, "str") else str(error)
    return DriftstreamError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers} "
                            f"(DRIFTSTREAM_KAFKA_BOOTSTRAP_SERVERS): {text}")  # fmt: skip


def check_topics(settings: Settings, topics: Sequence[tuple[str, str]]) -> None:
    """``DriftstreamError`` (one line) unless Kafka answers and has each (topic, its setting)."""
    consumer = Consumer({**settings.confluent_config(), "group.id": "driftstream-report", "log_level": 0})
    try:
        try:
            metadata = consumer.list_topics(timeout=5)
        except KafkaException as exc:
            raise _kafka_error(settings, exc) from exc
        for topic, setting in topics:
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                raise DriftstreamError(
                    f"the topic {topic!r} ({setting}) does not exist on Kafka at {settings.kafka_bootstrap_servers}: "
                    "start a worker first, or name the topic"
                )
    finally:
        consumer.close()


def read_model_entries(
    settings: Settings,
    topic: str,
    setting: str,
    model: str,
    since: float | None = None,
    advance: Callable[[int, int], None] | None = None,
) -> TopicRead:
    """Every JSON object of ``model`` on ``topic`` (keyed by model), from ``since`` (Unix seconds; None:
    the beginning) up to the end the topic had when the read began. ``advance(done, total)`` follows it."""
    consumer = Consumer({
        **settings.confluent_config(),
        "group.id": f"driftstream-report-{uuid.uuid4().hex[:8]}",  # never joined: partitions are assigned
        "enable.auto.commit": False,
        "log_level": 0,  # the client's own connection errors would drown the one line this says
    })  # fmt: skip
    read = TopicRead()
    key = model.encode()
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=5)
        except KafkaException as exc:
            raise _kafka_error(settings, exc) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise DriftstreamError(
                f"the topic {topic!r} ({setting}) does not exist on Kafka at {settings.kafka_bootstrap_servers}: "
                "start a worker first, or name the topic"
            )
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        try:
            for partition in sorted(found.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                starts[partition], ends[partition] = low, high
            if since is not None:
                asked = [TopicPartition(topic, p, int(since * 1000)) for p in starts]
                for tp in consumer.offsets_for_times(asked, timeout=5):
                    starts[tp.partition] = tp.offset if tp.offset >= 0 else ends[tp.partition]
        except KafkaException as exc:
            raise _kafka_error(settings, exc) from exc
        pending = {p: ends[p] for p in starts if starts[p] < ends[p]}
        total = sum(ends[p] - starts[p] for p in pending)
        if advance:
            advance(0, total)
        if not pending:
            return read
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in pending])
        last_progress = time.monotonic()
        while pending:
            messages = consumer.consume(1000, timeout=0.5)
            if not messages:
                if time.monotonic() - last_progress > STALL_SECONDS:
                    read.complete = False
                    break
                continue
            last_progress = time.monotonic()
            for message in messages:
                if message.error():
                    continue
                partition, offset = message.partition(), message.offset()
                if partition not in pending or offset is None or offset >= pending[partition]:
                    continue
                read.messages += 1
                if offset + 1 >= pending[partition]:
                    del pending[partition]
                if message.key() != key:
                    continue
                try:
                    entry = orjson.loads(message.value() or b"")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and entry.get("model") == model:
                    read.entries.append(entry)
            if advance:
                advance(read.messages, total)
    finally:
        consumer.close()
    return read


# -- what the topics say -------------------------------------------------------


def statistic_series(snapshots: Iterable[dict[str, Any]], scope: str | None = None
                     ) -> dict[SeriesKey, list[tuple[float, float, float | None]]]:  # fmt: skip
    """(feature, version, detector) -> [(time, value, line)] of one scope (None: the whole model), in time order."""
    series: dict[SeriesKey, list[tuple[float, float, float | None]]] = {}
    for snapshot in snapshots:
        at = snapshot.get("at")
        if not isinstance(at, (int, float)):
            continue
        for entry in snapshot.get("statistics") or ():
            if not isinstance(entry, dict) or (entry.get("segment") or None) != scope:
                continue
            value, line = entry.get("value"), entry.get("line")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            key = (entry.get("feature"), entry.get("version"), str(entry.get("detector")))
            line = float(line) if isinstance(line, (int, float)) and math.isfinite(line) else None
            series.setdefault(key, []).append((float(at), float(value), line))
    for points in series.values():
        points.sort(key=lambda point: point[0])
        if len(points) > MAX_POINTS:
            step = len(points) / MAX_POINTS
            points[:] = [points[int(i * step)] for i in range(MAX_POINTS - 1)] + [points[-1]]
    return series


def _when(alert: dict[str, Any]) -> float | None:
    text = alert.get("detected_at")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def alert_row(alert: dict[str, Any]) -> str:
    """What an alert is about, as a timeline row: ``f2``, ``f5 [region=eu]``, ``prediction v2``, ``inputs``."""
    feature = alert.get("feature")
    kind = alert.get("type")
    if feature is None:
        subject = {"data_drift": "inputs", "performance": "quality", "concept_drift": "quality"}.get(
            str(kind), "prediction")  # fmt: skip
        if subject != "inputs" and alert.get("model_version") is not None:
            subject += f" v{alert['model_version']}"
    else:
        subject = str(feature)
    if kind == "data_quality" and feature is not None:
        subject += " (missing values)"
    segment = alert.get("segment")
    if isinstance(segment, dict) and segment:
        subject += " [" + ",".join(f"{k}={v}" for k, v in segment.items()) + "]"
    return subject


@dataclass(frozen=True)
class Span:
    row: str
    start: float
    end: float
    severity: str
    open: bool  # still firing at the end of what was read


def alert_spans(alerts: Sequence[dict[str, Any]], now: float) -> list[Span]:
    """Firing stretches per row: from a firing alert to its resolve (an escalation starts a new stretch)."""
    opened: dict[tuple[str, str], tuple[float, str]] = {}  # (row, incident type) -> (start, severity)
    spans: list[Span] = []
    for alert in sorted(alerts, key=lambda a: _when(a) or 0.0):
        at = _when(alert)
        if at is None:
            continue
        key = (alert_row(alert), str(alert.get("type")))
        if alert.get("status") == "firing":
            if key in opened:
                start, severity = opened.pop(key)
                spans.append(Span(key[0], start, at, severity, False))
            opened[key] = (at, str(alert.get("severity")))
        elif key in opened:
            start, severity = opened.pop(key)
            spans.append(Span(key[0], start, at, severity, False))
    for (row, _), (start, severity) in opened.items():
        spans.append(Span(row, start, max(now, start), severity, True))
    return spans


# -- plots -------------------------------------------------------------------

_REFERENCE, _CURRENT = "#4c72b0", "#dd8452"
_SEVERITY = {"warning": "#e6a700", "critical": "#c0392b"}


def _png(figure: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def distribution_png(title: str, shares: NumericShares | CategoricalShares) -> str:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.2, 2.9))
    if isinstance(shares, NumericShares):
        widths = shares.edges[1:] - shares.edges[:-1]
        axes.bar(shares.edges[:-1], shares.reference, width=widths, align="edge", alpha=0.55, color=_REFERENCE,
                 label=f"reference ({shares.reference_count:,})")  # fmt: skip
        axes.step(shares.edges, [*shares.current, shares.current[-1] if shares.current.size else 0.0], where="post",
                  color=_CURRENT, linewidth=2, label=f"current window ({shares.current_count:,})")  # fmt: skip
        axes.axvline(shares.reference_mean, color=_REFERENCE, linestyle=":", linewidth=1)
        if shares.current_mean is not None:
            axes.axvline(shares.current_mean, color=_CURRENT, linestyle=":", linewidth=1)
        axes.set_ylabel("share of values")
    else:
        shown = min(len(shares.categories), 20)
        positions = list(range(shown))
        axes.bar([p - 0.2 for p in positions], shares.reference[:shown], width=0.4, color=_REFERENCE,
                 label=f"reference ({shares.reference_count:,})")  # fmt: skip
        axes.bar([p + 0.2 for p in positions], shares.current[:shown], width=0.4, color=_CURRENT,
                 label=f"current window ({shares.current_count:,})")  # fmt: skip
        axes.set_xticks(positions, [name[:14] for name in shares.categories[:shown]], rotation=30, ha="right",
                        fontsize=8)  # fmt: skip
        axes.set_ylabel("share of values")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def statistics_png(title: str, series: dict[str, list[tuple[float, float, float | None]]]) -> str:
    """One small panel per detector: its statistic per judged window and its line."""
    plt = _pyplot()
    names = sorted(series)
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.3 * rows), squeeze=False)
    for axes in grid.flat[len(names) :]:
        axes.set_visible(False)
    for axes, name in zip(grid.flat, names, strict=False):
        points = series[name]
        times = [datetime.fromtimestamp(at, UTC) for at, _, _ in points]
        axes.plot(times, [value for _, value, _ in points], color=_CURRENT, linewidth=1.4, marker=".",
                  markersize=3, label="statistic")  # fmt: skip
        if any(line is not None for _, _, line in points):
            axes.step(times, [math.nan if line is None else line for _, _, line in points], where="post",
                      color="#333333", linestyle="--", linewidth=1, label="line")  # fmt: skip
        axes.set_title(name, fontsize=9)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
        for label in axes.get_xticklabels():
            label.set_rotation(20)
    grid.flat[0].legend(fontsize=7, frameon=False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def timeline_png(spans: Sequence[Span], rows: Sequence[str]) -> str:
    plt = _pyplot()
    import matplotlib.dates as mdates

    figure, axes = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.2))
    position = {row: i for i, row in enumerate(rows)}
    for span in spans:
        start = mdates.date2num(datetime.fromtimestamp(span.start, UTC))
        end = mdates.date2num(datetime.fromtimestamp(span.end, UTC))
        width = max(end - start, 1 / 86400)  # at least a second: a firing resolved at once still shows
        axes.broken_barh([(start, width)], (position[span.row] - 0.35, 0.7), facecolors=_SEVERITY.get(
            span.severity, "#888888"), edgecolor="black" if span.open else "none")  # fmt: skip
    axes.set_yticks(range(len(rows)), list(rows), fontsize=8)
    axes.set_ylim(-0.6, len(rows) - 0.4)
    axes.invert_yaxis()
    axes.xaxis_date()
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M:%S"))
    for label in axes.get_xticklabels():
        label.set_rotation(20)
        label.set_fontsize(8)
    axes.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    axes.legend(handles=[Patch(color=_SEVERITY["warning"], label="warning"),
                         Patch(color=_SEVERITY["critical"], label="critical"),
                         Patch(facecolor="white", edgecolor="black", label="firing now (outlined)")],
                fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # fmt: skip
    axes.set_title("alert timeline: firing to resolved", fontsize=10)
    return _png(figure)


# -- the page ------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px 32px; color: #222; }
h1 { margin-bottom: 2px; } h2 { margin-top: 34px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #666; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.critical { color: #c0392b; font-weight: 600; } .warning { color: #b07d00; font-weight: 600; } .ok { color: #2e7d32; }
.feature { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.feature img { border: 1px solid #eee; }
.note { color: #666; font-size: 13px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _state(severity: str | None) -> str:
    return '<span class="ok">ok</span>' if severity is None else f'<span class="{severity}">FIRING {severity}</span>'


def _detector_table(column: ColumnReading) -> str:
    if column.reference_rows is not None:
        return (f'<p class="note">collecting its reference: {column.reference_rows:,} of '
                f"{column.reference_size:,} values</p>")  # fmt: skip
    rows = "".join(
        f"<tr><td>{_e(r.name)}</td><td class=num>{_number(r.statistic)}</td><td class=num>{_number(r.line)}</td>"
        f"<td class=num>{'' if r.p_value is None else f'{r.p_value:.2g}'}</td><td>{_state(r.severity)}</td></tr>"
        for r in column.detectors
    )
    return ("<table><tr><th>detector</th><th>statistic</th><th>line</th><th>p-value</th><th>state</th></tr>"
            f"{rows}</table>")  # fmt: skip


def _alerts_table(alerts: Sequence[dict[str, Any]], limit: int = 40) -> str:
    recent = sorted(alerts, key=lambda a: _when(a) or 0.0)[-limit:][::-1]
    rows = "".join(
        f"<tr><td>{_e(str(a.get('detected_at', ''))[:19].replace('T', ' '))}</td>"
        f"<td class={'ok' if a.get('status') == 'resolved' else _e(a.get('severity'))}>{_e(a.get('status'))}</td>"
        f"<td>{_e(a.get('severity'))}</td><td>{_e(alert_row(a))}</td><td>{_e(', '.join(a.get('detectors') or []))}"
        f"</td><td>{_e(a.get('message', ''))}</td></tr>"
        for a in recent
    )
    return ("<table><tr><th>detected (UTC)</th><th>status</th><th>severity</th><th>what</th><th>detectors</th>"
            f"<th>message</th></tr>{rows}</table>")  # fmt: skip


def render_report(
    model: str,
    state: LiveState,
    snapshots: Sequence[dict[str, Any]],
    alerts: Sequence[dict[str, Any]],
    *,
    now: float | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The report's HTML: the model's live state (``state``), its ``drift-metrics`` snapshots and its alerts."""
    now = time.time() if now is None else now
    monitors = [monitor for _, monitor in state.monitors if monitor.model == model]
    readings: list[ModelReading] = read_models(((p, m) for p, m in state.monitors if m.model == model),
                                               segments=False)  # fmt: skip
    reading = readings[0] if readings else None
    series = statistic_series(snapshots)
    columns = columns_of(monitors)
    by_column: dict[tuple[str | None, str | None], list[ColumnReading]] = {}
    for column in reading.columns if reading else ():
        by_column.setdefault((column.feature, column.version), []).append(column)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>driftstream report: {_e(model)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>driftstream report: {_e(model)}</h1>"]  # fmt: skip
    generated = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if reading is not None:
        versions = ", ".join("-" if v is None else v for v in reading.versions) or "-"
        parts.append(f"<p class=meta>generated {generated}; {reading.events_seen:,} events over partition(s) "
                     f"{', '.join(map(str, reading.partitions))}; version(s) {_e(versions)}; "
                     f"{len(snapshots):,} judged-window snapshots and {len(alerts):,} alerts read</p>")  # fmt: skip
    for note in notes:
        parts.append(f"<p class=note>{_e(note)}</p>")
    # What fires now.
    firing = reading.firing if reading else []
    parts.append("<h2>Firing now</h2>")
    if firing:
        parts.append("<table><tr><th>what</th><th>type</th><th>severity</th><th>detectors</th></tr>" + "".join(
            f"<tr><td>{_e(column.subject)}</td><td>{_e(alert.type)}</td><td class={alert.severity}>"
            f"{alert.severity}</td><td>{_e(', '.join(alert.detectors))}</td></tr>" for column, alert in firing)
            + "</table>")  # fmt: skip
    else:
        parts.append("<p class=ok>nothing is firing</p>")
    # The timeline.
    parts.append("<h2>Alert timeline</h2>")
    spans = alert_spans(alerts, now)
    if spans:
        rows = list(dict.fromkeys(span.row for span in sorted(spans, key=lambda s: (s.start, s.row))))
        parts.append(f"<img alt='alert timeline' src='{timeline_png(spans, rows)}'>")
        parts.append("<h3>Latest alerts</h3>" + _alerts_table(alerts))
    else:
        parts.append("<p class=note>no alerts of this model in what was read</p>")
    # Per column.
    parts.append("<h2>Features</h2>")
    keys = sorted(columns, key=lambda k: (k[0] is None, k[0] or "", k[1] or ""))
    for key in keys:
        feature, version = key
        name = feature if feature is not None else ("prediction" if version is None else f"prediction v{version}")
        severity = max((c.severity for c in by_column.get(key, [])), key=lambda s: {None: 0, "warning": 1}.get(s, 2),
                       default=None)  # fmt: skip
        parts.append(f"<h3 id='{_e(name)}'>{_e(name)} {_state(severity)}</h3><div class=feature>")
        shares = column_shares(columns[key])
        if shares is not None:
            image = distribution_png(f"{name}: reference against the current window", shares)
            parts.append(f"<img alt='{_e(name)}: reference against current window' src='{image}'>")
        wanted = {detector: points for (f, v, detector), points in series.items() if (f, v) == key}
        if wanted:
            image = statistics_png(f"{name}: each statistic per window, with its line", wanted)
            parts.append(f"<img alt='{_e(name)}: statistics over time' src='{image}'>")
        parts.append("<div>" + "".join(_detector_table(c) for c in by_column.get(key, [])) + "</div></div>")
        if not wanted:
            parts.append("<p class=note>no judged window of it in drift-metrics (yet)</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(settings: Settings, model: str, out: Path, hours: float = 0.0,
                 console: Console | None = None) -> str:  # fmt: skip
    """Read the state and the topics, write the report to ``out``; a line saying what was written."""
    state = read_state(settings, model)
    if not state.monitors:
        known = ", ".join(sorted(state.names)) or "none"
        raise DriftstreamError(f"no state of model {model!r} for app id {settings.app_id!r} (DRIFTSTREAM_APP_ID) "
                               f"at Redis; models there: {known}")  # fmt: skip
    since = time.time() - hours * 3600 if hours > 0 else None
    console = console or Console(stderr=True)
    topics = [(settings.topic_metrics, "DRIFTSTREAM_TOPIC_METRICS"),
              (settings.topic_alerts, "DRIFTSTREAM_TOPIC_ALERTS")]  # fmt: skip
    check_topics(settings, topics)  # before the progress bars: a closed port is one line, not a bar and a line
    reads: dict[str, TopicRead] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:  # fmt: skip
        for topic, setting in topics:
            task = progress.add_task(f"reading {topic}", total=None)

            def advance(done: int, total: int, task: Any = task) -> None:
                progress.update(task, completed=done, total=total)

            reads[topic] = read_model_entries(settings, topic, setting, model, since, advance)
    notes = [f"{topic}: stopped early (no progress for {STALL_SECONDS:g} s): what follows is partial"
             for topic, read in reads.items() if not read.complete]  # fmt: skip
    notes += state.problems
    if hours > 0:
        notes.append(f"statistics and alerts of the last {hours:g} hour(s)")
    page = render_report(model, state, reads[settings.topic_metrics].entries, reads[settings.topic_alerts].entries,
                         notes=notes)  # fmt: skip
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise DriftstreamError(f"cannot write {out}: {exc.strerror or exc}") from exc
    metrics, alerts = len(reads[settings.topic_metrics].entries), len(reads[settings.topic_alerts].entries)
    return (f"wrote {out} ({len(page) / 1e6:.1f} MB): {model}, {metrics:,} judged-window snapshots, "
            f"{alerts:,} alerts")  # fmt: skip
