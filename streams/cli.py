"""The ``driftstream`` command."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from streams import DriftstreamError
from streams.settings import Settings, describe_settings, settings_error, show_settings

if TYPE_CHECKING:
    from detectors.monitors.quality import QualityReference

app = typer.Typer(
    help="driftstream: a Kafka-native drift monitor for models in production.\n\n"
    "Settings come from DRIFTSTREAM_* environment variables and an optional TOML file "
    "named by DRIFTSTREAM_CONFIG (environment wins).",
    epilog="Settings (variable=default):\n\n" + describe_settings().replace("\n", "\n\n"),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def _settings() -> Settings:
    """The settings in force; an invalid one ends the command with one line naming it."""
    try:
        return Settings()
    except (ValueError, FileNotFoundError) as exc:
        _fail(f"settings: {settings_error(exc)}", exc)


def _fail(message: str, exc: BaseException | None = None) -> NoReturn:
    """End the command with ``error: message`` (one line, on stderr) and exit code 2."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2) from exc


@app.command()
def settings() -> None:
    """Print the settings in force (environment over DRIFTSTREAM_CONFIG's file over defaults) as
    VARIABLE=value lines with their meaning, after checking them: an invalid one is one error line."""
    typer.echo(show_settings(_settings()))


@app.command()
def worker() -> None:
    """Run one Faust worker (any number share the work by consumer group)."""
    from streams.app import Worker
    from streams.kafka import check_kafka, ensure_topics
    from streams.redis_client import access_denied, redis_problem
    from streams.state import StoreUnavailable, check_store, open_store

    config = _settings()
    logging.basicConfig(level=config.log_level)
    try:
        check_kafka(config)
        if config.create_topics:
            ensure_topics(config)
        asyncio.run(check_store(config))
    except StoreUnavailable as exc:
        if access_denied(exc):  # wrong credentials or ACL: permanent, fail now
            _fail(redis_problem(config, exc), exc)
        # Redis down: the worker waits for it (not ready until it answers), as after any outage.
        logging.getLogger("streams").warning("%s; waiting for it", redis_problem(config, exc))
    except DriftstreamError as exc:
        _fail(str(exc), exc)
    Worker(config, open_store(config)).run()


@app.command(
    epilog="Examples:\n\n"
    "driftstream simulate --segment region=eu:0.5,us:0.3,apac:0.2 --segment device=ios:0.6,android:0.4\n\n"
    "driftstream simulate --segment region=eu:0.5,us:0.5 --drift f2:mean_shift:8000:1.0@region=eu\n\n"
    "driftstream simulate --models fraud,churn --drift churn/c0:category_mix:5000 --version-switch 20000:v2\n\n"
    "driftstream simulate --labels --label-delay exp:30 --label-share 0.8 --concept-drift 20000 --label-batch 100"
)
def simulate(
    count: int = typer.Option(0, help="events per model; 0 = until interrupted"),
    rate: float = typer.Option(1000.0, help="events/s over all models; 0 = as fast as possible"),
    batch_size: int = typer.Option(
        1, help="events per message (the producer's max_batch_events); > 1 sends batch envelopes in rows"
    ),
    wire_format: str = typer.Option(
        "rows", "--format", metavar="FORMAT", help="rows | json | arrow: events as JSON objects or arrays (rows), "
        "or as the contract's columnar batches, JSON or Apache Arrow (labels are always JSON rows)",
    ),  # fmt: skip
    models: str = typer.Option("fraud", help="comma-separated model names"),
    numeric: int = typer.Option(8, help="numeric features f0..fN-1"),
    categorical: int = typer.Option(2, help="categorical features c0..cN-1"),
    seed: int = typer.Option(7),
    segment: list[str] | None = typer.Option(
        None,
        metavar="MIX",
        help="KEY=VALUE:SHARE,VALUE:SHARE,...: every event carries segment KEY with values in these shares "
        "(normalised; a missing share is 1); repeat for more keys",
    ),
    drift: list[str] | None = typer.Option(
        None,
        metavar="DRIFT",
        help="[MODEL/]FEATURE:KIND:START[:MAGNITUDE][@KEY=VALUE[,KEY=VALUE]]: a drift from the model's "
        "event START (default model: the first, magnitude: 1), in that segment only when @ is given; repeatable",
    ),
    drift_feature: str = typer.Option("", help="feature to drift, e.g. f0 (empty: no drift)"),
    drift_start: int = typer.Option(10_000, help="index of the first drifted event of the model"),
    drift_kind: str = typer.Option("mean_shift", help="mean_shift | variance | category_mix | null_rate"),
    drift_magnitude: float = typer.Option(1.0, help="sigmas, std factor or null share"),
    drift_model: str = typer.Option("", help="model to drift (default: the first)"),
    drift_segment: str = typer.Option("", help="KEY=VALUE[,KEY=VALUE]: drift only events of this segment"),
    version_switch: list[str] | None = typer.Option(
        None,
        metavar="SWITCH",
        help="[MODEL/]START:VERSION[:SHIFT]: from the model's event START its events carry VERSION "
        "(before any switch: 1) and its score moves by SHIFT in logit units (default 1); repeatable",
    ),
    task: str = typer.Option(
        "classification",
        metavar="TASK",
        help="classification: the prediction is a score in (0, 1), labels are 0/1; regression: the prediction "
        "is a number, labels are numbers",
    ),
    labels: bool = typer.Option(
        False,
        "--labels",
        help="also send each event's true label (joined by event_id) to the labels topic, late: the truth "
        "follows f0, the model's own input, with noise (a classifier is wrong about 13% of the time)",
    ),
    label_noise: float = typer.Option(0.05, help="share of labels that are wrong: a flipped class, an unrelated value"),
    label_delay: str = typer.Option(
        "fixed:0", metavar="DELAY", help="fixed:SECONDS | exp:MEAN | uniform:LOW:HIGH: label time after event time"
    ),
    label_share: float = typer.Option(1.0, help="share of events that ever get a label"),
    early_labels: float = typer.Option(0.0, help="share of labels sent before their event (with its timestamp)"),
    label_batch: int = typer.Option(1, help="labels per message; > 1 sends JSON arrays"),
    concept_drift: list[str] | None = typer.Option(
        None,
        metavar="CONCEPT",
        help="[MODEL/]EVENT[:KIND[:MAGNITUDE]][@KEY=VALUE,...]: from the model's event EVENT the labels follow "
        "another truth, the events stay the same; KIND rotate (toward f1 by MAGNITUDE degrees, default 70), "
        "flip or shift (the boundary moves by MAGNITUDE sigmas, default 1.25); about 40% errors by default; "
        "repeatable",
    ),
) -> None:
    """Produce simulated inference traffic, optionally sliced by segment, with injected drift and version switches,
    and optionally the labels that come later."""
    from streams.simulate import (
        ConceptDrift,
        Drift,
        LabelDelay,
        LabelPlan,
        SegmentMix,
        Traffic,
        VersionSwitch,
        parse_segment_filter,
        send,
    )

    try:
        drifts = [Drift.parse(spec) for spec in drift or ()]
        if drift_feature:
            where = parse_segment_filter(drift_segment) if drift_segment else None
            drifts.append(Drift(drift_feature, drift_start, drift_kind, drift_magnitude, drift_model or None, where))  # type: ignore[arg-type]
        elif drift_segment:
            raise ValueError("--drift-segment needs --drift-feature (or give the segment in --drift ...@KEY=VALUE)")
        traffic = Traffic(
            tuple(m for m in models.split(",") if m), numeric, categorical, seed, tuple(drifts),
            segments=tuple(SegmentMix.parse(spec) for spec in segment or ()),
            versions=tuple(VersionSwitch.parse(spec) for spec in version_switch or ()),
            task=task,  # type: ignore[arg-type]
        )  # fmt: skip
        plan = LabelPlan(label_noise, LabelDelay.parse(label_delay), label_share, early_labels,
                         tuple(ConceptDrift.parse(spec) for spec in concept_drift or ()))  # fmt: skip
        if not labels:
            given = [name for name, value, default in [
                ("--label-noise", label_noise, 0.05), ("--label-delay", plan.delay, LabelDelay()),
                ("--label-share", label_share, 1.0), ("--early-labels", early_labels, 0.0),
                ("--label-batch", label_batch, 1), ("--concept-drift", plan.concept_drifts, ()),
            ] if value != default]  # fmt: skip
            if given:
                raise ValueError(f"{', '.join(given)} need(s) --labels")
        if label_batch < 1:
            raise ValueError(f"--label-batch must be >= 1, got {label_batch}")
        if wire_format not in ("rows", "json", "arrow"):
            raise ValueError(f"--format must be rows, json or arrow, got {wire_format!r}")
        if labels:
            plan.check(traffic)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    from streams.kafka import check_kafka, unreachable_message
    from streams.progress import progress

    config = _settings()
    if not 1 <= batch_size <= config.max_events_per_message:
        raise typer.BadParameter(f"--batch-size must be 1 to max_events_per_message "
                                 f"({config.max_events_per_message}), got {batch_size}")  # fmt: skip
    try:
        check_kafka(config)
    except DriftstreamError as exc:
        _fail(str(exc), exc)
    total = count * len(traffic.models) if count else None
    try:
        with progress("simulate: events sent", total) as advance:
            sent = send(config, traffic, count, rate, batch_size, labels=plan if labels else None,
                        label_batch=label_batch, progress=advance, format=wire_format)  # type: ignore[arg-type]  # fmt: skip
    except KeyboardInterrupt:
        return
    if sent.undelivered:
        what = f"{sent.events - (sent.delivered_events or 0)} of {sent.events} events" + (
            f" and {sent.labels - (sent.delivered_labels or 0)} of {sent.labels} labels" if labels else "")
        reason = sent.error or "not acknowledged by the broker in time"
        _fail(f"{what} were not delivered: " + unreachable_message(config, reason))
    typer.echo(f"sent {sent.events} events" + (f" and {sent.labels} labels" if labels else ""))


@app.command()
def alerts(
    model: list[str] | None = typer.Option(None, "--model", "-m", help="only this model (repeatable)"),
    type_: list[str] | None = typer.Option(
        None, "--type", "-t", help="only this alert type (repeatable): data_drift, prediction_drift, data_quality, "
        "performance, concept_drift"),
    severity: str = typer.Option("warning", help="the lowest severity shown: warning (all) or critical"),
    firing: bool = typer.Option(False, "--firing", help="only firing alerts, not resolved ones"),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="start at the topic's first alert, "
                                        "not at its end"),
    json_output: bool = typer.Option(False, "--json", help="one alert a line, as JSON (for scripts)"),
    count: int = typer.Option(0, help="stop after this many alerts; 0 = follow until Ctrl-C"),
) -> None:
    """Follow the alert topic: print alerts as they come (as the demo does), filtered."""
    from streams.follow import AlertFilter, follow

    config = _settings()
    try:
        wanted = AlertFilter(frozenset(model or ()), frozenset(type_ or ()), severity, firing)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        follow(config, wanted, from_beginning, json_output, count)
    except DriftstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        pass


@app.command()
def demo(
    duration: float = typer.Option(0.0, help="stop after this many seconds; 0 = until Ctrl-C"),
    rate: float = typer.Option(2000.0, help="simulated events/s"),
    seed: int | None = typer.Option(None, help="seed of the simulated traffic (default 42): other values, same drifts"),
) -> None:
    """Start a broker, Redis, a worker and drifting traffic; print alerts as they fire."""
    from streams.demo import run_demo

    try:
        run_demo(duration, rate, seed=seed)
    except DriftstreamError as exc:
        _fail(str(exc), exc)


def _names(option: str, text: str | None) -> list[str] | None:
    """A comma-separated list of column names (None when the option is not given)."""
    if text is None:
        return None
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise typer.BadParameter(f"{option} names no column")
    return names


@app.command(
    epilog="Examples:\n\n"
    "driftstream baseline fraud train.parquet --exclude customer_id,label --prediction-column score --version 3\n\n"
    "driftstream baseline fraud validation.csv --exclude customer_id --prediction-column score --label-column label"
)
def baseline(
    model: str = typer.Argument(..., help="model name, as in the events"),
    path: Path = typer.Argument(..., help="CSV (with header) or Parquet file of training data"),
    columns: str | None = typer.Option(None, help="comma-separated: take only these columns as features"),
    exclude: str | None = typer.Option(None, help="comma-separated: take every column but these as features"),
    prediction_column: str | None = typer.Option(
        None,
        help="the column of the model's output, the reference of prediction drift (default: a column named "
        "__prediction__, if any)",
    ),
    version: str | None = typer.Option(
        None,
        help="store it for this model version (its prediction reference wins over the model's); "
        "default: the model's baseline, for every version",
    ),
    label_column: str | None = typer.Option(
        None,
        help="the column of the true labels (never a feature): the rows that have one, with the model's output "
        "in --prediction-column or --probability-columns, give the reference quality that live quality "
        "from late labels is judged against",
    ),
    probability_columns: str | None = typer.Option(
        None,
        metavar="PREFIX",
        help="the columns named PREFIX<class> hold the model's class probabilities (e.g. p_ for p_0,p_1): "
        "part of the reference quality, never features; needs --label-column",
    ),
) -> None:
    """Load a model's reference distributions from training data into the state store, and with
    --label-column its reference quality."""
    from detectors.monitors import PREDICTION
    from streams.baseline import (
        LabeledRowsReader,
        baseline_blob,
        build_references,
        counted,
        file_columns,
        file_rows,
        find_probability_columns,
        quality_columns,
        read_chunks,
        reference_quality,
        select_columns,
    )
    from streams.progress import progress
    from streams.redis_client import redis_problem
    from streams.state import StoreUnavailable, check_store, open_store

    config = _settings()
    if version is not None and not version.strip():
        raise typer.BadParameter("--version must not be empty")
    if label_column is not None and not label_column.strip():
        raise typer.BadParameter("--label-column must not be empty")
    if probability_columns is not None and label_column is None:
        raise typer.BadParameter("--probability-columns needs --label-column")
    try:  # before reading a file that may be large: the store must take the result
        asyncio.run(check_store(config))
    except StoreUnavailable as exc:
        _fail(redis_problem(config, exc), exc)
    except DriftstreamError as exc:
        _fail(str(exc), exc)
    quality = None
    try:
        available = file_columns(path)
        probabilities = find_probability_columns(available, probability_columns) if probability_columns else {}
        selected = select_columns(available, _names("--columns", columns), _names("--exclude", exclude) or (),
                                  prediction_column, label_column, list(probabilities))  # fmt: skip
        with progress(f"baseline: rows of {path.name} read", file_rows(path)) as advance:
            if label_column is None:
                chunks = counted(read_chunks(path, columns=selected), advance)
            else:
                wanted = quality_columns(selected, label_column, probabilities)
                reader = LabeledRowsReader(wanted, version)
                chunks = reader.strip(counted(read_chunks(path, columns={**selected, **wanted.renames},
                                                          exact=wanted.exact), advance))  # fmt: skip
            references = build_references(chunks, config.monitor_config(), config.feature_kinds(model))
        if label_column is not None:
            quality = reference_quality(reader, config.quality_spec(model), config.monitor_config(model))
    except (DriftstreamError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not references:
        raise typer.BadParameter(f"{path}: the columns taken hold no values")

    async def save() -> None:
        store = open_store(config)
        try:
            await store.save_baseline(model, baseline_blob(references, quality), version=version)
        finally:
            await store.close()

    try:
        asyncio.run(save())
    except StoreUnavailable as exc:
        _fail(redis_problem(config, exc), exc)
    features = [name for name in references if name != PREDICTION]
    prediction = next((name for name, stored in selected.items() if stored == PREDICTION), None)
    empty = [name for name, stored in selected.items() if stored not in references]
    typer.echo(
        f"baseline of {model!r}"
        + (f" version {version!r}" if version is not None else " (all versions)")
        + f" from {path}: {len(features)} feature(s): {', '.join(features) or '-'}; prediction: "
        + (f"yes (column {prediction!r})" if PREDICTION in references else "no")
        + (f"; skipped, no values: {', '.join(empty)}" if empty else "")
        + (f"; quality: {_quality_line(quality)}" if quality is not None else "")
    )


def _quality_line(quality: QualityReference) -> str:
    """One line of a reference quality."""
    shown = {"accuracy", "f1", "roc_auc", "log_loss"} if quality.task == "classification" else {"mae", "rmse"}
    metrics = ", ".join(f"{name} {value:.4g}" for name, value in sorted(quality.metrics.items()) if name in shown)
    return f"{quality.task}, {quality.count} labeled row(s)" + (f", {metrics}" if metrics else "")


@app.command()
def status(
    model: str | None = typer.Argument(None, help="only this model (default: every model)"),
    width: int | None = typer.Option(None, help="table width in characters (default: the terminal's)"),
) -> None:
    """Each model's features with their detectors' latest statistics against their lines, and the alerts
    firing now: from the state in Redis, so every worker's partitions."""
    from streams.status import status as print_status

    config = _settings()
    try:
        print_status(config, model, width=width)
    except DriftstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def report(
    model: str = typer.Argument(..., help="the model to report on"),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="the HTML file to write"),
    hours: float = typer.Option(0.0, help="statistics and alerts of the last HOURS only; 0 = all the topics hold"),
) -> None:
    """Write one self-contained HTML file of a model: per feature its reference against the current window,
    each statistic over recent windows with its line, and the alert timeline."""
    from streams.report import write_report

    config = _settings()
    try:
        written = write_report(config, model, out, hours=hours)
    except DriftstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(written)


@app.command(
    epilog="Examples:\n\n"
    "driftstream replay --from 2026-11-24T00:00:00Z --to 2026-12-01T00:00:00Z\n\n"
    "DRIFTSTREAM_PSI_WARNING=0.2 driftstream replay --from 1795478400 --alerts-topic drift-alerts-try --fresh\n\n"
    "driftstream replay --from-offset 0 --to-offset inference-events:0=99999 --memory --json"
)
def replay(
    from_: str | None = typer.Option(
        None, "--from", metavar="TIME",
        help="start at this Kafka record time: RFC 3339 or Unix seconds (default: the start of the log)"),
    to: str | None = typer.Option(
        None, "--to", metavar="TIME",
        help="end at this record time (inclusive): a later record ends its partition (default: the end of the log "
        "when the replay starts)"),
    from_offset: list[str] | None = typer.Option(
        None, "--from-offset", metavar="OFFSET",
        help="start at N on every partition, or TOPIC:PARTITION=N on one (repeatable)"),
    to_offset: list[str] | None = typer.Option(
        None, "--to-offset", metavar="OFFSET",
        help="the last offset replayed: N on every partition, or TOPIC:PARTITION=N (repeatable)"),
    topics: list[str] | None = typer.Option(
        None, "--topics", metavar="TOPICS",
        help="comma-separated topics to replay (default: the events topic, and the labels topic when label "
        "joining is on)"),
    state_prefix: str | None = typer.Option(
        None, "--state-prefix", metavar="PREFIX",
        help="Redis prefix of the replay's state (default: DRIFTSTREAM_STATE_PREFIX + '-replay'; never the live one)"),
    memory: bool = typer.Option(
        False, "--memory", help="keep the replay's state in this process (baselines are still read from Redis)"),
    fresh: bool = typer.Option(False, "--fresh", help="delete what an earlier replay left under the prefix first"),
    resume: bool = typer.Option(False, "--resume", help="go on from what an earlier replay left under the prefix"),
    alerts_topic: str | None = typer.Option(
        None, "--alerts-topic", metavar="TOPIC",
        help="send the alerts to this topic instead of printing them (never the live alert topic)"),
    json_output: bool = typer.Option(False, "--json", help="alerts and retraining requests as JSON lines"),
) -> None:
    """Run the worker's detectors, with the settings in force, over a past range of the input topics: alerts
    printed (or sent to --alerts-topic), retraining requests printed, never published; nothing reaches the live
    alert topic, DLQ or state. A summary ends it, on stderr."""
    from typing import Any

    import orjson
    from rich.console import Console

    from streams.console import format_alert, format_request
    from streams.kafka import check_kafka
    from streams.progress import progress
    from streams.replay import OffsetBound, ReplayRange, parse_time
    from streams.replay import replay as run_replay

    config = _settings()
    logging.basicConfig(level=logging.DEBUG if config.log_level == "DEBUG" else logging.WARNING)
    console = Console(highlight=False, soft_wrap=True)

    def show_alert(alert: dict[str, Any]) -> None:
        if json_output:
            typer.echo(orjson.dumps(alert).decode())
        else:
            console.print(f"{str(alert.get('detected_at', ''))[:19]} " + format_alert(alert))

    def show_request(request: dict[str, Any]) -> None:
        if json_output:
            typer.echo(orjson.dumps(request).decode())
        else:
            console.print(format_request(request))

    try:
        if fresh and resume:
            raise DriftstreamError("--fresh and --resume exclude each other")
        span = ReplayRange(
            since=None if from_ is None else parse_time("--from", from_),
            until=None if to is None else parse_time("--to", to),
            from_offsets=OffsetBound.parse("--from-offset", from_offset or []),
            to_offsets=OffsetBound.parse("--to-offset", to_offset or []),
        )
        names = [name.strip() for text in topics or () for name in text.split(",") if name.strip()]
        check_kafka(config)
        with progress("replay: events replayed") as advance:
            summary = run_replay(config, span, topics=names or None, state_prefix=state_prefix, memory=memory,
                                 existing="fresh" if fresh else "resume" if resume else "refuse",
                                 alerts_topic=alerts_topic, on_alert=None if alerts_topic else show_alert,
                                 on_request=show_request, progress=advance)  # fmt: skip
    except DriftstreamError as exc:
        _fail(str(exc), exc)
    except KeyboardInterrupt:
        _fail("interrupted; the replay state up to its last checkpoint is kept (--resume goes on from it)")
    for line in summary.lines():
        typer.echo(line, err=True)


def main() -> None:
    app()
