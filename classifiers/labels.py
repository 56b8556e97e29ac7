"""The label table: which columns are tasks, which values are unknown, and a fingerprint of what was trained on.

A label table (``data.parquet``) has ``uuid``, the category ``cc3`` and tag columns. The tags are declared,
never guessed from the values: by default the assignment's three (``DEFAULT_TAGS``), or the names given with
``--tags``. A declared tag column must hold only 0, 1 or null; anything else ("yes", 0.5, 2) is an error that
names the column and the values, so a typo can neither drop a tag nor turn another 0/1 column into one.
Unknown labels are nulls (NaN): the two sources of the stand-in data each label only one task, so a NaN tag
means "not asked", never "absent", and is dropped per task instead of being read as 0.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORY = "cc3"
GROUP = "group"
# Columns that are never tags.
NOT_TAGS = frozenset({"uuid", CATEGORY, "color1", GROUP, "source"})
DEFAULT_TAGS = ("polka dot", "floral", "checker")  # the assignment's pattern tags
SHOWN_VALUES = 5


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


def tag_columns(data: pd.DataFrame, tags: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The declared tags (default: DEFAULT_TAGS), each checked to be a column of 0, 1 or null."""
    tags = list(DEFAULT_TAGS if tags is None else tags)
    reserved = [t for t in tags if t in NOT_TAGS]
    if reserved:
        raise ValueError(f"{', '.join(map(repr, reserved))} cannot be a tag (reserved column)")
    if len(set(tags)) != len(tags):
        raise ValueError(f"tags named twice: {', '.join(tags)}")
    missing = [t for t in tags if t not in data.columns]
    if missing:
        raise ValueError(f"label table has no tag column {', '.join(map(repr, missing))} "
                         f"(columns: {', '.join(map(str, data.columns))}); name the tags with --tags")
    for tag in tags:
        check_binary(data[tag], tag)
    return tags


def check_binary(values: pd.Series, name: str) -> None:
    """A tag column holds only 0, 1 (or True/False) and nulls; else ValueError naming it and its bad values."""
    known = values.dropna()
    if pd.api.types.is_bool_dtype(known):
        return
    if pd.api.types.is_numeric_dtype(known):
        numbers = known.to_numpy(dtype=np.float64)
        bad = pd.unique(known[~np.isin(numbers, (0.0, 1.0))])
    else:
        bad = pd.unique(known[~known.map(lambda v: isinstance(v, (bool, np.bool_)) or v in (0, 1))])
    if len(bad):
        shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in bad[:SHOWN_VALUES])
        raise ValueError(f"tag column {name!r} must hold only 0, 1 or null; it holds {shown}"
                         f"{' ...' if len(bad) > SHOWN_VALUES else ''}")


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
