"""Reference distributions from training data (CSV or Parquet) into the state store."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from detectors.columns import FeatureKind, infer_kind, to_boolean, to_categorical, to_numeric
from detectors.config import MonitorConfig
from detectors.reference import CategoricalReferenceBuilder, NumericReferenceBuilder, Reference
from streams import DriftstreamError
from streams.state import BASELINE_VERSION, encode

CHUNK_ROWS = 50_000


def _csv_value(text: str) -> Any:
    if text == "":
        return None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(text)
    except ValueError:
        return text


def read_chunks(path: Path, rows: int = CHUNK_ROWS) -> Iterator[dict[str, list[Any]]]:
    """Columns of a CSV (header row required) or Parquet file, ``rows`` rows at a time."""
    if not path.is_file():
        raise DriftstreamError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DriftstreamError("reading Parquet needs pyarrow: pip install 'driftstream[parquet]'") from exc
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            yield {name: batch.column(name).to_pylist() for name in batch.schema.names}
        return
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise DriftstreamError(f"{path}: no header row")
        names = list(reader.fieldnames)
        chunk: dict[str, list[Any]] = {name: [] for name in names}
        for count, row in enumerate(reader, 1):
            for name in names:
                chunk[name].append(_csv_value(row.get(name) or ""))
            if count % rows == 0:
                yield chunk
                chunk = {name: [] for name in names}
        if chunk[names[0]]:
            yield chunk


def read_columns(path: Path) -> dict[str, list[Any]]:
    """A whole CSV or Parquet file as columns (small files; baselines stream with ``read_chunks``)."""
    columns: dict[str, list[Any]] = {}
    for chunk in read_chunks(path):
        for name, values in chunk.items():
            columns.setdefault(name, []).extend(values)
    return columns


def build_references(
    chunks: Iterable[dict[str, list[Any]]] | dict[str, list[Any]],
    config: MonitorConfig,
    kinds: dict[str, FeatureKind] | None = None,
) -> dict[str, Reference]:
    """References of every column, fed chunk by chunk in bounded memory per column."""
    if isinstance(chunks, dict):
        chunks = [chunks]
    kinds = dict(kinds or {})
    builders: dict[str, NumericReferenceBuilder | CategoricalReferenceBuilder] = {}
    for chunk in chunks:
        for name, values in chunk.items():
            kind = kinds.get(name) or infer_kind(values)
            if kind is None:
                continue  # all missing so far: decide when a value arrives
            kinds[name] = kind
            builder = builders.get(name)
            if kind == "numeric":
                numeric, _ = to_numeric(values)
                builder = builders.setdefault(name, NumericReferenceBuilder())
                assert isinstance(builder, NumericReferenceBuilder)
                builder.update(numeric)
            else:
                labels, _ = (to_boolean if kind == "boolean" else to_categorical)(values)
                builder = builders.setdefault(name, CategoricalReferenceBuilder(config.category_map_size))
                assert isinstance(builder, CategoricalReferenceBuilder)
                builder.update(labels)
    references: dict[str, Reference] = {}
    for name, builder in builders.items():
        if isinstance(builder, NumericReferenceBuilder):
            if builder.count:
                references[name] = builder.build(config.psi_bins, config.reference_points)
        elif builder.present:
            references[name] = builder.build(config.max_categories)
    return references


def baseline_blob(references: dict[str, Reference]) -> bytes:
    return encode({"v": BASELINE_VERSION, "features": {n: r.to_plain() for n, r in references.items()}})
