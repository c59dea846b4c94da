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

from detectors.reference import CategoricalReference, NumericReference
from streams.baseline import baseline_blob, build_references, read_chunks, read_columns
from streams.cli import app
from streams.engine import Engine, Record
from streams.metrics import Metrics
from streams.settings import Settings
from streams.state import MemoryStateStore, RedisStateStore

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


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_training_files_give_typed_references(tmp_path: Path, suffix: str) -> None:
    table = training_table()
    path = tmp_path / f"train.{suffix}"
    if suffix == "csv":
        write_csv(path, table)
    else:
        pq.write_table(pa.table(table), path)
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
