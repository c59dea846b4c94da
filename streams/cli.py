"""The ``driftstream`` command."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer

from streams import DriftstreamError
from streams.settings import Settings, describe_settings

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
    try:
        return Settings()
    except (ValueError, FileNotFoundError) as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def settings() -> None:
    """List every setting: environment variable, default and meaning."""
    typer.echo(describe_settings())


@app.command()
def worker() -> None:
    """Run one Faust worker (any number share the work by consumer group)."""
    from streams.app import Worker
    from streams.kafka import ensure_topics
    from streams.state import open_store

    config = _settings()
    logging.basicConfig(level=config.log_level)
    try:
        if config.create_topics:
            ensure_topics(config)
    except DriftstreamError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    Worker(config, open_store(config)).run()


@app.command()
def simulate(
    count: int = typer.Option(0, help="events per model; 0 = until interrupted"),
    rate: float = typer.Option(1000.0, help="events/s over all models; 0 = as fast as possible"),
    batch_size: int = typer.Option(1, help="events per message; > 1 sends batch envelopes"),
    models: str = typer.Option("fraud", help="comma-separated model names"),
    numeric: int = typer.Option(8, help="numeric features f0..fN-1"),
    categorical: int = typer.Option(2, help="categorical features c0..cN-1"),
    seed: int = typer.Option(7),
    drift_feature: str = typer.Option("", help="feature to drift, e.g. f0 (empty: no drift)"),
    drift_start: int = typer.Option(10_000, help="index of the first drifted event of the model"),
    drift_kind: str = typer.Option("mean_shift", help="mean_shift | variance | category_mix | null_rate"),
    drift_magnitude: float = typer.Option(1.0, help="sigmas, std factor or null share"),
    drift_model: str = typer.Option("", help="model to drift (default: the first)"),
) -> None:
    """Produce simulated inference traffic, optionally with injected drift."""
    from streams.simulate import Drift, Traffic, produce

    try:
        drifts = (
            (Drift(drift_feature, drift_start, drift_kind, drift_magnitude, drift_model or None),)  # type: ignore[arg-type]
            if drift_feature
            else ()
        )
        traffic = Traffic(tuple(m for m in models.split(",") if m), numeric, categorical, seed, drifts)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        sent = produce(_settings(), traffic, count, rate, batch_size)
    except KeyboardInterrupt:
        return
    typer.echo(f"sent {sent} events")


@app.command()
def demo(
    duration: float = typer.Option(0.0, help="stop after this many seconds; 0 = until Ctrl-C"),
    rate: float = typer.Option(2000.0, help="simulated events/s"),
) -> None:
    """Start a broker, Redis, a worker and drifting traffic; print alerts as they fire."""
    from streams.demo import run_demo

    run_demo(duration, rate)


@app.command()
def baseline(
    model: str = typer.Argument(..., help="model name, as in the events"),
    path: Path = typer.Argument(..., help="CSV (with header) or Parquet file of training data"),
) -> None:
    """Load a model's reference distributions from training data into the state store."""
    from streams.baseline import baseline_blob, build_references, read_chunks
    from streams.state import open_store

    config = _settings()
    try:
        references = build_references(read_chunks(path), config.monitor_config(), config.feature_kinds(model))
    except (DriftstreamError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc

    async def save() -> None:
        store = open_store(config)
        try:
            await store.save_baseline(model, baseline_blob(references))
        finally:
            await store.close()

    asyncio.run(save())
    typer.echo(f"baseline of {model!r}: {len(references)} feature(s) from {path}")


def main() -> None:
    app()
