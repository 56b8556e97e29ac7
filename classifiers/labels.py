"""The label table: which columns are tasks, which values are unknown, and a fingerprint of what was trained on.

A label table (``data.parquet``) has ``uuid``, the category ``cc3`` and any number of 0/1 tag columns. Unknown
labels are nulls (NaN): the two sources of the stand-in data each label only one task, so a NaN tag means
"not asked", never "absent", and is dropped per task instead of being read as 0.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORY = "cc3"
GROUP = "group"
# Columns that are never tags, whatever their values.
NOT_TAGS = frozenset({"uuid", CATEGORY, "color1", GROUP, "source"})


def read_labels(data: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A label table from a DataFrame or a Parquet file; it must have a unique ``uuid`` column."""
    if not isinstance(data, pd.DataFrame):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"label file {path} does not exist")
        data = pd.read_parquet(path)
    if "uuid" not in data.columns:
        raise ValueError(f"label table has no 'uuid' column (columns: {', '.join(map(str, data.columns))})")
    if data["uuid"].isna().any():
        raise ValueError("label table has rows without a uuid")
    duplicated = data["uuid"][data["uuid"].duplicated()]
    if len(duplicated):
        raise ValueError(f"label table repeats {duplicated.nunique()} uuid(s), e.g. {duplicated.iloc[0]!r}")
    return data.reset_index(drop=True)


def tag_columns(data: pd.DataFrame) -> list[str]:
    """Columns (in table order) whose known values are all 0 or 1 and that are not reserved columns."""
    tags = []
    for name in data.columns:
        if name in NOT_TAGS:
            continue
        known = data[name].dropna()
        if len(known) and _is_binary(known):
            tags.append(str(name))
    return tags


def _is_binary(values: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(values):
        return True
    if not pd.api.types.is_numeric_dtype(values):
        return False
    return bool(np.isin(values.to_numpy(dtype=np.float64), (0.0, 1.0)).all())


def category_values(data: pd.DataFrame) -> pd.Series:
    """The category of each row as a string, or None where unknown."""
    if CATEGORY not in data.columns:
        raise ValueError(f"label table has no {CATEGORY!r} (category) column")
    column = data[CATEGORY]
    known = column.notna().to_numpy()
    # Built by hand: with pandas' string dtype, where(..., None) would put NaN back, and str(NaN) is "nan".
    values = np.array([str(v) if k else None for v, k in zip(column.to_numpy(dtype=object), known)], dtype=object)
    return pd.Series(values, index=data.index, dtype=object)


def tag_values(data: pd.DataFrame, tag: str) -> np.ndarray:
    """0/1 float labels of one tag with NaN where unknown (None, NaN and pd.NA all become NaN)."""
    return pd.to_numeric(data[tag], errors="raise").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def groups_of(data: pd.DataFrame) -> np.ndarray | None:
    """Uploader of each row, or None without a ``group`` column; a row with no group is its own group."""
    if GROUP not in data.columns:
        return None
    column = data[GROUP]
    own = pd.Series([f"\x00row-{i}" for i in range(len(data))], index=data.index)
    return column.astype(object).where(column.notna(), own).astype(str).to_numpy()


def fingerprint(data: pd.DataFrame, tags: list[str]) -> str:
    """sha256 of the labels trained on (uuid, category, tags, group), independent of row and column order."""
    columns = [c for c in ["uuid", CATEGORY, *sorted(tags), GROUP] if c in data.columns]
    rows = data[columns].sort_values("uuid")
    digest = hashlib.sha256(json.dumps(columns).encode())
    for row in rows.itertuples(index=False):
        digest.update(json.dumps([_canonical(v) for v in row]).encode() + b"\n")
    return digest.hexdigest()


def _canonical(value) -> str | float | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_, int, np.integer, float, np.floating)):
        return float(value)
    return str(value)
