"""Reference distributions from training data (CSV or Parquet) into the state store."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from detectors.columns import FeatureKind, infer_kind, to_boolean, to_categorical, to_numeric
from detectors.config import MonitorConfig
from detectors.monitors import PREDICTION
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


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DriftstreamError("reading Parquet needs pyarrow: pip install 'driftstream[parquet]'") from exc
    return pq.ParquetFile(path)


def file_columns(path: Path) -> list[str]:
    """The column names of a CSV (its header row) or Parquet file (its schema), without reading the rows."""
    if not path.is_file():
        raise DriftstreamError(f"{path}: no such file")
    if _is_parquet(path):
        return list(_parquet_file(path).schema_arrow.names)
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise DriftstreamError(f"{path}: no header row")
    return header


def read_chunks(
    path: Path, rows: int = CHUNK_ROWS, columns: Mapping[str, str] | None = None
) -> Iterator[dict[str, list[Any]]]:
    """Columns of a CSV (header row required) or Parquet file, ``rows`` rows at a time.

    ``columns`` maps the file's columns to read to the names they get (see ``select_columns``);
    None reads every column under its own name.
    """
    if not path.is_file():
        raise DriftstreamError(f"{path}: no such file")
    if _is_parquet(path):
        wanted = list(columns) if columns is not None else None
        for batch in _parquet_file(path).iter_batches(batch_size=rows, columns=wanted):
            names = batch.schema.names
            yield {(columns or {}).get(name, name): batch.column(name).to_pylist() for name in names}
        return
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise DriftstreamError(f"{path}: no header row")
        names = list(columns) if columns is not None else list(reader.fieldnames)
        if not names:
            return
        renamed = [(columns or {}).get(name, name) for name in names]
        chunk: dict[str, list[Any]] = {name: [] for name in renamed}
        for count, row in enumerate(reader, 1):
            for name, new in zip(names, renamed, strict=True):
                chunk[new].append(_csv_value(row.get(name) or ""))
            if count % rows == 0:
                yield chunk
                chunk = {name: [] for name in renamed}
        if chunk[renamed[0]]:
            yield chunk


def select_columns(
    available: Sequence[str],
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    prediction_column: str | None = None,
) -> dict[str, str]:
    """The file columns a baseline takes, each mapped to the name it is stored under.

    Features keep their names; the prediction column is stored as ``PREDICTION``, the name the
    monitors give the model's output. ``columns`` (None: all) and ``exclude`` choose the features.
    A file column already named ``PREDICTION`` is the prediction when no other is named.
    Raises ``DriftstreamError`` with one line naming what is wrong.
    """
    present = set(available)

    def check(option: str, names: Iterable[str]) -> None:
        unknown = [name for name in names if name not in present]
        if unknown:
            shown = ", ".join(repr(name) for name in unknown)
            raise DriftstreamError(f"{option}: no column {shown} in the file (it has: {', '.join(available)})")

    if columns is not None:
        if not columns:
            raise DriftstreamError("--columns names no column")
        check("--columns", columns)
    check("--exclude", exclude)
    both = [name for name in exclude if columns is not None and name in columns]
    if both:
        raise DriftstreamError(f"--columns and --exclude both name {', '.join(map(repr, both))}")
    if prediction_column is not None:
        check("--prediction-column", [prediction_column])
        if prediction_column in exclude:
            raise DriftstreamError(f"--exclude names the prediction column {prediction_column!r}")
        if prediction_column != PREDICTION and PREDICTION in present and PREDICTION not in exclude:
            # Two predictions: the file's own and the one named; say which wins rather than guess.
            raise DriftstreamError(
                f"the file already has a prediction column {PREDICTION!r}: drop --prediction-column "
                f"or add --exclude {PREDICTION}"
            )
    chosen = [name for name in (available if columns is None else columns) if name not in exclude]
    selected = {name: name for name in dict.fromkeys(chosen) if name != prediction_column}
    if prediction_column is not None:
        selected[prediction_column] = PREDICTION
    if not selected:
        raise DriftstreamError("no column left to load")
    return selected


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
