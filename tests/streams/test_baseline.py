"""Baselines from training data replace the stream's first values as reference."""

from __future__ import annotations

import asyncio
import itertools
import math
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from detectors.monitors import PREDICTION
from detectors.monitors.quality import LabeledRows, QualityReference, QualitySpec, quality_reference
from detectors.reference import CategoricalReference, NumericReference
from streams import DriftstreamError
from streams.baseline import (
    LabeledRowsReader,
    baseline_blob,
    build_references,
    file_columns,
    quality_columns,
    read_chunks,
    read_columns,
    reference_quality,
    select_columns,
)
from streams.cli import app
from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.settings import Settings
from streams.simulate import LabelPlan, Traffic, labeled_events
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
    # CSV booleans as true/false, missing values as empty cells
    text = lambda v: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
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


# --- the reference quality: --label-column, --probability-columns ---


def labeled_table(rows: int = ROWS, seed: int = 11) -> dict[str, list]:
    """A scored binary classifier's validation rows: label y (some missing), score p, right ~85% of the time."""
    rng = np.random.default_rng(seed)
    table = training_table()
    truth = rng.random(rows) < 0.4
    score = np.where(truth, rng.beta(5, 2, rows), rng.beta(2, 5, rows)).round(4)
    table["p"] = score.tolist()
    table["y"] = [int(t) if i % 10 else None for i, t in enumerate(truth)]  # every tenth row has no label
    return table


def expected_accuracy(table: dict[str, list]) -> tuple[int, float]:
    pairs = [(y, p) for y, p in zip(table["y"], table["p"], strict=True) if y is not None]
    return len(pairs), float(np.mean([(p >= 0.5) == y for y, p in pairs]))


def test_the_label_column_is_never_a_feature() -> None:
    columns = [*FILE_COLUMNS, "y"]
    chosen = select_columns(columns, exclude=["customer_id"], prediction_column="score", label_column="y")
    assert chosen == {"amount": "amount", "country": "country", "is_new": "is_new", "score": PREDICTION}
    chosen = select_columns([*columns, "p_a", "p_b"], exclude=["customer_id", "score"], label_column="y",
                            outputs=["p_a", "p_b"])  # fmt: skip
    assert chosen == {"amount": "amount", "country": "country", "is_new": "is_new"}
    with pytest.raises(DriftstreamError, match="--columns names 'y': the label and the model's probabilities"):
        select_columns(columns, columns=["amount", "y"], label_column="y")
    with pytest.raises(DriftstreamError, match="the label column 'score' is also the prediction column"):
        select_columns(columns, prediction_column="score", label_column="score")
    with pytest.raises(DriftstreamError, match="--label-column: no column 'label' in the file"):
        select_columns(columns, label_column="label")


def test_csv_labels_and_classes_keep_their_integers(tmp_path: Path) -> None:
    path = tmp_path / "v.csv"
    path.write_text("x,y,p\n1,1,0.5\n2,0,1\n3,,true\n")
    chunk = next(read_chunks(path, exact=["y", "p"]))
    assert chunk == {"x": [1.0, 2.0, 3.0], "y": [1, 0, None], "p": [0.5, 1, True]}
    assert [type(v) for v in chunk["y"][:2]] == [int, int]
    assert next(read_chunks(path))["y"] == [1.0, 0.0, None]  # features read as before


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_labeled_rows_give_the_reference_quality(tmp_path: Path, redis_env: Settings, suffix: str) -> None:
    table = labeled_table()
    path = tmp_path / f"validation.{suffix}"
    write_training_file(path, table)
    args = ["baseline", "fraud", str(path), "--prediction-column", "p", "--label-column", "y", "--version", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    count, accuracy = expected_accuracy(table)
    assert count == ROWS - ROWS // 10
    assert "3 feature(s): amount, country, is_new; prediction: yes (column 'p')" in result.output
    assert f"quality: classification, {count} labeled row(s), accuracy {accuracy:.4g}" in result.output
    (blob,), _ = stored_baselines(redis_env, ("fraud", "3"))
    assert blob is not None and blob["v"] == 1
    assert set(blob["features"]) == {"amount", "country", "is_new", PREDICTION}  # y is no feature
    quality = QualityReference.from_plain(blob["quality"])
    assert quality.task == "classification" and quality.count == count and quality.source == "baseline"
    assert quality.accuracy == pytest.approx(accuracy)
    assert quality.classes[:2] in (("0", "1"), ("1", "0")) and 0.8 < quality.metrics["roc_auc"] <= 1.0


def test_probability_columns_without_a_prediction(tmp_path: Path, redis_env: Settings) -> None:
    """Class probabilities alone: the predicted class is the most probable; the columns are no features."""
    rng = np.random.default_rng(12)
    classes = np.array(["cat", "dog", "eel"])
    truth = rng.integers(0, 3, 2000)
    logits = rng.normal(0, 1, (2000, 3)) + 2.0 * np.eye(3)[truth]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    table = {"amount": rng.normal(5, 1, 2000).tolist(), "label": classes[truth].tolist()}
    table.update({f"proba_{c}": probabilities[:, k].tolist() for k, c in enumerate(classes)})
    path = tmp_path / "v.parquet"
    write_training_file(path, table)
    args = ["baseline", "zoo", str(path), "--label-column", "label", "--probability-columns", "proba_"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 feature(s): amount; prediction: no" in result.output
    (blob,), _ = stored_baselines(redis_env, ("zoo", None))
    assert set(blob["features"]) == {"amount"}  # type: ignore[index]
    quality = QualityReference.from_plain(blob["quality"])  # type: ignore[index]
    assert quality.count == 2000 and set(quality.classes) == {"cat", "dog", "eel"}
    assert quality.accuracy == pytest.approx(float(np.mean(probabilities.argmax(axis=1) == truth)))
    p_true = probabilities[np.arange(2000), truth]
    assert quality.metrics["log_loss"] == pytest.approx(float(-np.log(p_true).mean()))


def test_a_regressors_reference_quality(tmp_path: Path, redis_env: Settings) -> None:
    rng = np.random.default_rng(13)
    prediction = rng.normal(100, 10, 1500)
    label = prediction + rng.normal(0, 2, 1500)
    path = tmp_path / "v.csv"
    write_csv(path, {"x": rng.normal(0, 1, 1500).tolist(), "price": prediction.round(3).tolist(),
                     "sold_at": label.round(3).tolist()})  # fmt: skip
    args = ["baseline", "house", str(path), "--prediction-column", "price", "--label-column", "sold_at"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "quality: regression, 1500 labeled row(s), mae " in result.output
    (blob,), _ = stored_baselines(redis_env, ("house", None))
    quality = QualityReference.from_plain(blob["quality"])  # type: ignore[index]
    assert quality.task == "regression" and set(blob["features"]) == {"x", PREDICTION}  # type: ignore[index]
    assert quality.mae == pytest.approx(float(np.abs(label.round(3) - prediction.round(3)).mean()))


def test_a_parquet_label_column_with_missing_values_is_still_classes(tmp_path: Path) -> None:
    """pandas writes a 0/1 column with missing values as float: 1.0 is read as the class 1."""
    path = tmp_path / "v.parquet"
    write_training_file(path, {"x": [1.0, 2.0, 3.0, 4.0], "p": [0.9, 0.2, 0.7, 0.4], "y": [1.0, 0.0, None, 1.0]})
    available = file_columns(path)
    selected = select_columns(available, prediction_column="p", label_column="y")
    wanted = quality_columns(selected, "y")
    reader = LabeledRowsReader(wanted, "2")
    references = build_references(reader.strip(read_chunks(path, columns={**selected, **wanted.renames})),
                                  Settings().monitor_config())  # fmt: skip
    assert set(references) == {"x", PREDICTION}
    assert reader.labels == [1, 0, 1] and [type(v) for v in reader.labels] == [int, int, int]
    quality = reference_quality(reader, QualitySpec(), Settings().monitor_config())
    assert quality.task == "classification" and quality.accuracy == pytest.approx(2 / 3)


def test_the_simulators_ground_truth_gives_its_intended_quality(tmp_path: Path) -> None:
    """A validation file made by the simulator: the reference accuracy is 1 - its intended error rate."""
    plan = LabelPlan()
    items = list(itertools.islice(labeled_events(Traffic(numeric=3, categorical=1, seed=21), 0, plan), 8000))
    table = {name: [i.event["features"][name] for i in items] for name in ("f0", "f1", "f2", "c0")}
    table["score"] = [i.event["prediction"] for i in items]
    table["label"] = [i.label["label"] for i in items]  # type: ignore[index]
    path = tmp_path / "sim.csv"
    write_csv(path, table)
    selected = select_columns(file_columns(path), prediction_column="score", label_column="label")
    wanted = quality_columns(selected, "label")
    reader = LabeledRowsReader(wanted)
    chunks = read_chunks(path, columns={**selected, **wanted.renames}, exact=wanted.exact)
    assert set(build_references(reader.strip(chunks), Settings().monitor_config())) == {"f0", "f1", "f2", "c0",
                                                                                        PREDICTION}  # fmt: skip
    quality = reference_quality(reader, QualitySpec(), Settings().monitor_config())
    errors = round((1 - quality.accuracy) * 8000)  # type: ignore[operator]
    rate = plan.error_rate()
    assert abs(errors / 8000 - rate) <= 5 * math.sqrt(rate * (1 - rate) / 8000)


def test_a_baseline_with_a_quality_reference_still_judges_the_first_window() -> None:
    """Readers of the features ignore the quality key: the blob keeps version 1."""
    table = training_table()
    references = build_references(table, Settings().monitor_config())
    rows = LabeledRows([None] * 4, [None] * 4, [0.9, 0.1, 0.8, 0.3], [None] * 4, [1, 0, 0, 0], np.zeros(4),
                       np.zeros(4))  # fmt: skip
    quality = quality_reference(rows, QualitySpec())
    blob = baseline_blob(references, quality)
    assert decode(blob)["v"] == 1 and QualityReference.from_plain(decode(blob)["quality"]).accuracy == 0.75
    store = MemoryStateStore()
    asyncio.run(store.save_baseline("fraud", blob))
    engine = Engine(Settings(window_size=500), store, Metrics(CollectorRegistry()))
    events = [{"model": "fraud", "features": {"amount": 130.0 + i % 7, "country": "DE", "is_new": False}}
              for i in range(500)]  # fmt: skip
    out = asyncio.run(engine.process([Record("e", 0, 0, 1.8e9, b"fraud", orjson.dumps(events))]))
    assert {("amount", "psi"), ("country", "psi")} <= {(a["feature"], a["detector"]) for a in out.alert_objects}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--probability-columns", "p"], "--probability-columns needs --label-column"),
        (["--label-column", "y"], "the reference quality needs the model's output too"),
        (["--label-column", "y", "--probability-columns", "zz_"], "no column starts with 'zz_'"),
        (["--label-column", "nope", "--prediction-column", "p"], "--label-column: no column 'nope' in the file"),
        (["--label-column", " "], "--label-column must not be empty"),
        (["--label-column", "y", "--prediction-column", "p", "--columns", "amount,y"], "--columns names 'y'"),
        (
            ["--label-column", "amount", "--prediction-column", "customer_id", "--exclude", "country,y,p,is_new"],
            "no labeled row with a usable label and prediction",
        ),  # fmt: skip
    ],
)
def test_the_command_refuses_a_bad_quality_selection_and_stores_nothing(
    tmp_path: Path, redis_env: Settings, options: list[str], message: str
) -> None:
    path = tmp_path / "v.csv"
    table = labeled_table()
    table["customer_id"] = [f"c{i}" for i in range(ROWS)]
    write_csv(path, table)
    result = CliRunner().invoke(app, ["baseline", "fraud", str(path), *options])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    (model,), generation = stored_baselines(redis_env, ("fraud", None))
    assert model is None and generation == 0


def test_no_labeled_row_is_an_error(tmp_path: Path, redis_env: Settings) -> None:
    path = tmp_path / "v.csv"
    path.write_text("x,p,y\n1,0.5,\n2,0.7,\n")
    result = CliRunner().invoke(
        app, ["baseline", "fraud", str(path), "--prediction-column", "p", "--label-column", "y"]
    )
    assert result.exit_code == 2 and "--label-column y: no row has a label" in result.output
