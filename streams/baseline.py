"""Reference distributions from training data (CSV or Parquet) into the state store, and the
model's reference quality from the rows that hold a label."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.columns import FeatureKind, infer_kind, to_boolean, to_categorical, to_numeric
from detectors.config import MonitorConfig
from detectors.monitors import PREDICTION
from detectors.monitors.quality import LabeledRows, QualityReference, QualitySpec, quality_reference
from detectors.reference import CategoricalReferenceBuilder, NumericReferenceBuilder, Reference
from streams import DriftstreamError
from streams.state import BASELINE_VERSION, encode

CHUNK_ROWS = 50_000
LABEL = "__label__"  # the name the label column is read under (never a feature)
_PROBABILITY = "__probability__:"  # + class: the names probability columns are read under


def _csv_value(text: str, exact: bool = False) -> Any:
    """A CSV cell: empty is missing, true/false booleans, numbers floats (``exact``: an integer stays
    an int, as in JSON, so a label or predicted class ``1`` is the class 1 and not a score), else text."""
    if text == "":
        return None
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if exact:
        try:
            return int(text)
        except ValueError:
            pass
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


def file_rows(path: Path) -> int | None:
    """The rows of a Parquet file (from its footer); None for a CSV file (unknown before it is read)."""
    return int(_parquet_file(path).metadata.num_rows) if _is_parquet(path) and path.is_file() else None


def counted(chunks: Iterable[dict[str, list[Any]]], advance: Callable[[int], None]) -> Iterator[dict[str, list[Any]]]:
    """``chunks`` as they are, calling ``advance`` with the rows read so far after each."""
    done = 0
    for chunk in chunks:
        done += len(next(iter(chunk.values()), ()))
        advance(done)
        yield chunk


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
    path: Path, rows: int = CHUNK_ROWS, columns: Mapping[str, str] | None = None, exact: Collection[str] = ()
) -> Iterator[dict[str, list[Any]]]:
    """Columns of a CSV (header row required) or Parquet file, ``rows`` rows at a time.

    ``columns`` maps the file's columns to read to the names they get (see ``select_columns``);
    None reads every column under its own name. The CSV columns named in ``exact`` keep their
    integers as ints (Parquet columns keep their own types).
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
        exacts = [name in exact for name in names]
        chunk: dict[str, list[Any]] = {name: [] for name in renamed}
        for count, row in enumerate(reader, 1):
            for name, new, whole in zip(names, renamed, exacts, strict=True):
                chunk[new].append(_csv_value(row.get(name) or "", whole))
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
    label_column: str | None = None,
    outputs: Sequence[str] = (),
) -> dict[str, str]:
    """The file columns a baseline takes, each mapped to the name it is stored under.

    Features keep their names; the prediction column is stored as ``PREDICTION``, the name the
    monitors give the model's output. ``columns`` (None: all) and ``exclude`` choose the features.
    A file column already named ``PREDICTION`` is the prediction when no other is named.
    The label column and the ``outputs`` (the model's class probabilities) are never features:
    ``quality_columns`` reads them. Raises ``DriftstreamError`` with one line naming what is wrong.
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
    if label_column is not None:
        check("--label-column", [label_column])
        if label_column in (prediction_column, PREDICTION if prediction_column is None else None):
            raise DriftstreamError(f"the label column {label_column!r} is also the prediction column")
    not_features = ([] if label_column is None else [label_column]) + list(outputs)
    named = [name for name in not_features if columns is not None and name in columns]
    if named:
        raise DriftstreamError(f"--columns names {', '.join(map(repr, named))}: the label and the model's "
                               "probabilities are never features")  # fmt: skip
    exclude = [*exclude, *not_features]
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


def baseline_blob(references: dict[str, Reference], quality: QualityReference | None = None) -> bytes:
    """The stored baseline: ``{"v": 1, "features": {name: reference}}``, and ``"quality"`` (a
    ``QualityReference`` as plain data) when labels gave one; readers that know no quality ignore it."""
    blob: dict[str, Any] = {"v": BASELINE_VERSION, "features": {n: r.to_plain() for n, r in references.items()}}
    if quality is not None:
        blob["quality"] = quality.to_plain()
    return encode(blob)


# -- reference quality -------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityColumns:
    """The file columns a reference quality reads: the label, and the model's output."""

    label: str
    prediction: str | None = None  # the file column stored as PREDICTION (read under that name)
    probabilities: Mapping[str, str] = field(default_factory=dict)  # file column -> class

    @property
    def renames(self) -> dict[str, str]:
        """The names ``read_chunks`` gives the label and probability columns."""
        return {self.label: LABEL, **{column: _PROBABILITY + cls for column, cls in self.probabilities.items()}}

    @property
    def exact(self) -> list[str]:
        """The columns whose integers stay ints: a label or predicted class 1 is no score."""
        return [self.label] + ([self.prediction] if self.prediction is not None else [])


def find_probability_columns(available: Sequence[str], prefix: str) -> dict[str, str]:
    """The columns named ``prefix`` + class (e.g. ``p_0``, ``p_1`` for ``p_``), each mapped to its class."""
    if not prefix:
        raise DriftstreamError("--probability-columns needs a prefix, e.g. p_ for the columns p_0, p_1")
    found = {name: name[len(prefix) :] for name in available if name.startswith(prefix) and name != prefix}
    if not found:
        raise DriftstreamError(f"--probability-columns: no column starts with {prefix!r} "
                               f"(the file has: {', '.join(available)})")  # fmt: skip
    return found


def quality_columns(
    selected: Mapping[str, str], label_column: str, probabilities: Mapping[str, str] | None = None
) -> QualityColumns:
    """The quality columns, given the ``select_columns`` answer (which says where the prediction is)."""
    clash = [name for name in selected.values() if name == LABEL or name.startswith(_PROBABILITY)]
    if clash:
        raise DriftstreamError(f"column {clash[0]!r}: that name is the label's while reading; --exclude it")
    prediction = next((name for name, stored in selected.items() if stored == PREDICTION), None)
    if prediction is None and not probabilities:
        raise DriftstreamError(f"--label-column {label_column}: the reference quality needs the model's output "
                               "too: --prediction-column or --probability-columns")  # fmt: skip
    return QualityColumns(label_column, prediction, dict(probabilities or {}))


class LabeledRowsReader:
    """Takes the quality columns out of chunks on their way to ``build_references``, and keeps the
    rows that have a label as ``LabeledRows`` (every row in memory: its label, prediction and
    probabilities; the features stay streamed).

    A label that is a whole float (1.0) is read as the integer class, as a CSV ``1`` is: a
    Parquet column of classes with missing values is float. Set the model's ``task`` in the
    config file when that guess is wrong.
    """

    def __init__(self, columns: QualityColumns, version: str | None = None) -> None:
        self.columns = columns
        self.version = version
        self.labels: list[object] = []
        self.predictions: list[object] = []
        self.probabilities: list[dict[str, float] | None] = []

    def strip(self, chunks: Iterable[dict[str, list[Any]]]) -> Iterator[dict[str, list[Any]]]:
        for chunk in chunks:
            labels = chunk.pop(LABEL)
            given = {cls: chunk.pop(_PROBABILITY + cls) for cls in self.columns.probabilities.values()}
            predictions = chunk.get(PREDICTION) if self.columns.prediction is not None else None
            for row, label in enumerate(labels):
                if label is None:
                    continue
                if isinstance(label, float) and math.isfinite(label) and label.is_integer():
                    label = int(label)
                self.labels.append(label)
                self.predictions.append(predictions[row] if predictions is not None else None)
                probabilities = {cls: values[row] for cls, values in given.items() if values[row] is not None}
                self.probabilities.append(probabilities or None)
            yield chunk

    def rows(self) -> LabeledRows:
        n = len(self.labels)
        return LabeledRows([self.version] * n, [None] * n, self.predictions, self.probabilities, self.labels,
                           np.zeros(n), np.zeros(n))  # fmt: skip


def reference_quality(reader: LabeledRowsReader, spec: QualitySpec, config: MonitorConfig) -> QualityReference:
    """The reference quality of the rows ``reader`` kept; ``DriftstreamError`` when none is usable."""
    if not reader.labels:
        raise DriftstreamError(f"--label-column {reader.columns.label}: no row has a label")
    try:
        return quality_reference(reader.rows(), spec, config.max_classes, points=config.reference_points)
    except ValueError as exc:
        raise DriftstreamError(f"--label-column {reader.columns.label}: {exc}") from exc
