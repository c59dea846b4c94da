"""Reference distributions from training data (CSV or Parquet) into the state store."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from detectors.columns import FeatureKind, infer_kind, to_boolean, to_categorical, to_numeric
from detectors.config import MonitorConfig
from detectors.reference import CategoricalReference, NumericReference, Reference
from streams import DriftstreamError
from streams.state import BASELINE_VERSION, encode


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


def read_columns(path: Path) -> dict[str, list[Any]]:
    """Columns of a CSV (header row required) or Parquet file."""
    if not path.is_file():
        raise DriftstreamError(f"{path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise DriftstreamError("reading Parquet needs pyarrow: pip install 'driftstream[parquet]'") from exc
        table = pq.read_table(path)
        return {name: table.column(name).to_pylist() for name in table.column_names}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise DriftstreamError(f"{path}: no header row")
        columns: dict[str, list[Any]] = {name: [] for name in reader.fieldnames}
        for row in reader:
            for name in reader.fieldnames:
                columns[name].append(_csv_value(row.get(name) or ""))
    return columns


def build_references(
    columns: dict[str, list[Any]], config: MonitorConfig, kinds: dict[str, FeatureKind] | None = None
) -> dict[str, Reference]:
    references: dict[str, Reference] = {}
    for name, values in columns.items():
        kind = (kinds or {}).get(name) or infer_kind(values)
        if kind is None:
            continue  # all missing: nothing to compare against
        if kind == "numeric":
            numeric, _ = to_numeric(values)
            missing = int(np.isnan(numeric).sum())
            references[name] = NumericReference.build(numeric, config.psi_bins, missing, config.reference_points)
        else:
            labels, _ = (to_boolean if kind == "boolean" else to_categorical)(values)
            references[name] = CategoricalReference.build(labels, config.max_categories, config.category_map_size)
    return references


def baseline_blob(references: dict[str, Reference]) -> bytes:
    return encode({"v": BASELINE_VERSION, "features": {n: r.to_plain() for n, r in references.items()}})
