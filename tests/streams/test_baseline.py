"""Baselines from training data replace the stream's first values as reference."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from detectors.monitors import PREDICTION
from detectors.reference import CategoricalReference, NumericReference
from streams import DriftstreamError
from streams.baseline import (
    baseline_blob,
    build_references,
    file_columns,
    read_chunks,
    read_columns,
    select_columns,
)
from streams.cli import app
from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.settings import Settings
from streams.state import MemoryStateStore, RedisStateStore, decode

ROWS = 3000


def training_table() -> dict[str, list]:
    rng = np.random.default_rng(8)
    return {
        "amount": rng.normal(100, 10, ROWS).round(2).tolist(),
        "country": rng.choice(["DE", "FR", "US"], ROWS).tolist(),
        "is_new": (rng.random(ROWS) < 0.2).tolist(),
    }


def write_csv(path: Path, table: dict[str, list]) -> None:
    rows = zip(*table.values(), strict=True)
    text = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731 - CSV booleans as true/false
    lines = [",".join(table)] + [",".join(map(text, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def write_training_file(path: Path, table: dict[str, list]) -> None:
    """CSV or Parquet, by the path's suffix."""
    if path.suffix == ".csv":
        write_csv(path, table)
    else:
        pq.write_table(pa.table(table), path)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_training_files_give_typed_references(tmp_path: Path, suffix: str) -> None:
    table = training_table()
    path = tmp_path / f"train.{suffix}"
    write_training_file(path, table)
    references = build_references(read_columns(path), Settings().monitor_config())
    assert isinstance(references["amount"], NumericReference)
    assert references["amount"].mean == pytest.approx(np.mean(table["amount"]))
    assert isinstance(references["country"], CategoricalReference)
    assert set(references["country"].categories) == {"DE", "FR", "US"}
    assert set(references["is_new"].categories) == {"true", "false"}  # type: ignore[union-attr]


def test_a_loaded_baseline_judges_the_first_window(tmp_path: Path) -> None:
    """With a baseline there is no reference phase: the very first window is compared."""
    table = training_table()
    references = build_references(table, Settings().monitor_config())
    store = MemoryStateStore()
    asyncio.run(store.save_baseline("fraud", baseline_blob(references)))
    engine = Engine(Settings(window_size=500), store, Metrics(CollectorRegistry()))
    events = [{"model": "fraud", "features": {"amount": 130.0 + i % 7, "country": "DE", "is_new": False}}
              for i in range(500)]  # fmt: skip
    out = asyncio.run(engine.process([Record("e", 0, 0, 1.8e9, b"fraud", orjson.dumps(events))]))
    firing = {(a["feature"], a["detector"]) for a in out.alert_objects}
    assert {("amount", "psi"), ("country", "psi")} <= firing
    assert all(a["window"]["event_index"] == 499 for a in out.alert_objects if a["detector"] == "psi")


def test_the_baseline_command_stores_it_in_redis(tmp_path: Path, redis_url: str, unique: str, monkeypatch) -> None:
    path = tmp_path / "train.csv"
    write_csv(path, training_table())
    monkeypatch.setenv("DRIFTSTREAM_REDIS_URL", redis_url)
    monkeypatch.setenv("DRIFTSTREAM_STATE_PREFIX", f"bl-{unique}")
    result = CliRunner().invoke(app, ["baseline", "fraud", str(path)])
    assert result.exit_code == 0, result.output
    assert "3 feature(s)" in result.output

    async def stored() -> bytes | None:
        store = RedisStateStore.from_settings(Settings())
        try:
            return await store.load_baseline("fraud")
        finally:
            await store.close()

    blob = asyncio.run(stored())
    assert blob is not None and b"amount" in blob
    missing = CliRunner().invoke(app, ["baseline", "fraud", str(tmp_path / "nope.csv")])
    assert missing.exit_code != 0 and "no such file" in missing.output


def test_a_baseline_larger_than_memory_limits_is_streamed_into_sketches(tmp_path: Path) -> None:
    rows = 250_000
    rng = np.random.default_rng(9)
    amount = rng.normal(50, 5, rows)
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"amount": amount, "shop": [f"s{i % 300}" for i in range(rows)]}), path)
    chunks = list(read_chunks(path, rows=40_000))
    assert len(chunks) == 7  # the file is read 40,000 rows at a time
    references = build_references(iter(chunks), Settings().monitor_config())
    numeric = references["amount"]
    assert isinstance(numeric, NumericReference)
    # Past 100,000 values the builder spilled into KLL: a bounded summary with a stated rank error.
    assert 0 < numeric.rank_error < 0.005 and numeric.items.size < 5000 and numeric.count == rows
    assert numeric.mean == pytest.approx(amount.mean()) and numeric.summary["std"] == pytest.approx(amount.std())
    exact_median = float(np.median(amount))
    assert abs(numeric.summary["quantiles"]["p50"] - exact_median) < 0.05
    shops = references["shop"]
    assert isinstance(shops, CategoricalReference) and shops.present == rows and 290 < shops.distinct < 310


# --- choosing the columns: --columns, --exclude, --prediction-column, --version ---

FILE_COLUMNS = ["amount", "country", "is_new", "score", "customer_id"]


def scored_table() -> dict[str, list]:
    table = training_table()
    rng = np.random.default_rng(10)
    table["score"] = rng.beta(2, 5, ROWS).round(4).tolist()
    table["customer_id"] = [f"c{i}" for i in range(ROWS)]
    return table


def test_columns_exclude_and_the_prediction_column_choose_what_is_loaded() -> None:
    assert select_columns(FILE_COLUMNS) == {name: name for name in FILE_COLUMNS}
    assert select_columns(FILE_COLUMNS, columns=["country", "amount"]) == {"country": "country", "amount": "amount"}
    assert select_columns(FILE_COLUMNS, exclude=["customer_id", "score"]) == {
        "amount": "amount", "country": "country", "is_new": "is_new",
    }  # fmt: skip
    # The prediction column is stored under the monitors' name for the model's output, beside the features.
    assert select_columns(FILE_COLUMNS, ["amount"], prediction_column="score") == {
        "amount": "amount",
        "score": PREDICTION,
    }
    assert select_columns(FILE_COLUMNS, ["amount", "score"], prediction_column="score") == {
        "amount": "amount", "score": PREDICTION,
    }  # fmt: skip
    assert select_columns(FILE_COLUMNS, exclude=["customer_id"], prediction_column="score") == {
        "amount": "amount", "country": "country", "is_new": "is_new", "score": PREDICTION,
    }  # fmt: skip
    # A file column already named like that is the prediction, as before the option existed.
    assert select_columns(["amount", PREDICTION]) == {"amount": "amount", PREDICTION: PREDICTION}
    assert select_columns(["amount", PREDICTION], prediction_column=PREDICTION)[PREDICTION] == PREDICTION


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(columns=["amount", "colour"]), "--columns: no column 'colour' in the file (it has: amount, country, "),
        (dict(exclude=["nope"]), "--exclude: no column 'nope' in the file"),
        (dict(prediction_column="proba"), "--prediction-column: no column 'proba' in the file"),
        (dict(columns=["amount", "country"], exclude=["country"]), "--columns and --exclude both name 'country'"),
        (dict(exclude=["score"], prediction_column="score"), "--exclude names the prediction column 'score'"),
        (dict(columns=[]), "--columns names no column"),
        (dict(exclude=FILE_COLUMNS), "no column left to load"),
    ],
)
def test_a_bad_selection_is_one_clear_error(kwargs: dict, message: str) -> None:
    with pytest.raises(DriftstreamError) as info:
        select_columns(FILE_COLUMNS, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_two_prediction_columns_are_refused_unless_one_is_excluded() -> None:
    with pytest.raises(DriftstreamError, match="already has a prediction column"):
        select_columns(["amount", "score", PREDICTION], prediction_column="score")
    chosen = select_columns(["amount", "score", PREDICTION], exclude=[PREDICTION], prediction_column="score")
    assert chosen == {"amount": "amount", "score": PREDICTION}


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_only_the_chosen_columns_are_read_under_their_stored_names(tmp_path: Path, suffix: str) -> None:
    table = scored_table()
    path = tmp_path / f"train.{suffix}"
    write_training_file(path, table)
    assert file_columns(path) == FILE_COLUMNS
    chosen = select_columns(file_columns(path), exclude=["customer_id", "is_new"], prediction_column="score")
    chunks = list(read_chunks(path, rows=1000, columns=chosen))
    assert len(chunks) == 3 and all(set(chunk) == {"amount", "country", PREDICTION} for chunk in chunks)
    assert [v for chunk in chunks for v in chunk[PREDICTION]] == pytest.approx(table["score"])
    references = build_references(iter(chunks), Settings().monitor_config())
    assert set(references) == {"amount", "country", PREDICTION}
    assert references[PREDICTION].mean == pytest.approx(np.mean(table["score"]))  # type: ignore[union-attr]


def test_a_file_without_a_header_or_at_all_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DriftstreamError, match="no header row"):
        file_columns(empty)
    with pytest.raises(DriftstreamError, match="no such file"):
        file_columns(tmp_path / "nope.parquet")


@pytest.fixture
def redis_env(redis_url: str, unique: str, monkeypatch) -> Settings:
    """The CLI's settings: the test redis-server, keys under a prefix of this test's own."""
    monkeypatch.delenv("DRIFTSTREAM_CONFIG", raising=False)
    monkeypatch.setenv("DRIFTSTREAM_REDIS_URL", redis_url)
    monkeypatch.setenv("DRIFTSTREAM_STATE_PREFIX", f"bl-{unique}")
    return Settings()


def stored_baselines(config: Settings, *keys: tuple[str, str | None]) -> tuple[list[dict | None], int]:
    """The decoded baselines under (model, version) keys, and the baseline generation."""

    async def read() -> tuple[list[dict | None], int]:
        store = RedisStateStore.from_settings(config)
        try:
            blobs = [await store.load_baseline(model, version) for model, version in keys]
            return [decode(blob) if blob is not None else None for blob in blobs], await store.baseline_generation()
        finally:
            await store.close()

    return asyncio.run(read())


def test_the_command_stores_a_versions_baseline_with_its_prediction(tmp_path: Path, redis_env: Settings) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table(scored_table()), path)
    args = ["baseline", "fraud", str(path), "--columns", "amount,country", "--prediction-column", "score",
            "--version", "v2"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "baseline of 'fraud' version 'v2'" in result.output
    assert "2 feature(s): amount, country; prediction: yes (column 'score')" in result.output
    (version, model), generation = stored_baselines(redis_env, ("fraud", "v2"), ("fraud", None))
    assert model is None  # stored for v2 only, not as the model's
    assert version is not None and set(version["features"]) == {"amount", "country", PREDICTION}
    assert generation == 1  # running workers see the load


def test_the_command_stores_the_models_baseline_without_the_excluded(tmp_path: Path, redis_env: Settings) -> None:
    path = tmp_path / "train.csv"
    write_csv(path, scored_table())
    result = CliRunner().invoke(app, ["baseline", "fraud", str(path), "--exclude", "customer_id, score"])
    assert result.exit_code == 0, result.output
    assert "baseline of 'fraud' (all versions)" in result.output
    assert "3 feature(s): amount, country, is_new; prediction: no" in result.output
    (model,), generation = stored_baselines(redis_env, ("fraud", None))
    assert model is not None and set(model["features"]) == {"amount", "country", "is_new"}
    assert generation == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--columns", "amount,colour"], "--columns: no column 'colour' in the file"),
        (["--exclude", "nope"], "--exclude: no column 'nope' in the file"),
        (["--prediction-column", "proba"], "--prediction-column: no column 'proba' in the file"),
        (["--columns", "amount,country", "--exclude", "country"], "--columns and --exclude both name 'country'"),
        (["--columns", " , "], "--columns names no column"),
        (["--version", ""], "--version must not be empty"),
    ],
)
def test_the_command_refuses_a_bad_selection_and_stores_nothing(
    tmp_path: Path, redis_env: Settings, options: list[str], message: str
) -> None:
    path = tmp_path / "train.csv"
    write_csv(path, scored_table())
    result = CliRunner().invoke(app, ["baseline", "fraud", str(path), *options])
    assert result.exit_code == 2, result.output
    assert [line for line in result.output.splitlines() if message in line], result.output
    (model,), generation = stored_baselines(redis_env, ("fraud", None))
    assert model is None and generation == 0
