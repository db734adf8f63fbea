"""A directory of records: append-only Parquet parts, deduplicated on (query_id, model, tool).

Why this layout: collection runs for hours and gets interrupted, so every ``append`` writes one new
part file atomically (temporary name, then ``os.replace``) and never touches older parts; a rerun asks
``keys()`` what is already there and only adds the rest. Parquet keeps the table columnar so loading a
million records takes seconds and routers can read only the columns they need.

Layout of a store directory::

    meta.json                 {"format": "atlas-records", "schema_version": 1}
    part-<ns>-<rand>.parquet  one per append (or one after ``compact()``)
    compact.json              only during a compaction: the parts it replaces and the merged part
    .lock                     advisory lock serialising writers (appends, compaction)
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from atlas_router.errors import AtlasError
from atlas_router.records.schema import COLUMNS, KEY, SCHEMA_VERSION, query_key

META_FILE = "meta.json"
COMPACT_FILE = "compact.json"
FORMAT_NAME = "atlas-records"

# Value used for a column a row does not give. Strings default to "" (the schema's "unknown").
DEFAULTS: dict[str, Any] = {
    "tool": "none",
    "score": math.nan,
    "cost": math.nan,
    "input_tokens": 0,
    "output_tokens": 0,
    "latency_s": math.nan,
    "calls": 1,
    "schema_version": SCHEMA_VERSION,
}

_ARROW_TYPES = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}
ARROW_SCHEMA = pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in COLUMNS.items()])


class RecordStoreError(AtlasError):
    """A store directory that cannot be used: foreign files, newer schema, bad rows."""


def _default(column: str) -> Any:
    return DEFAULTS.get(column, "" if COLUMNS[column] == "string" else 0)


def _to_text(value: Any) -> str:
    """Cell to string: missing -> "", non-strings (lists, dicts, numbers) -> JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    return json.dumps(value, ensure_ascii=False, default=str)


def normalize(rows: pd.DataFrame | Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the schema columns, defaults filled, dtypes coerced.

    A missing ``query_id`` is derived from ``benchmark`` and ``query`` (``schema.query_key``).
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    unknown = [c for c in df.columns if c not in COLUMNS]
    if unknown:
        raise RecordStoreError(f"unknown record columns: {', '.join(map(str, unknown))} (schema: {', '.join(COLUMNS)})")
    n = len(df)
    if n and "model" not in df.columns:
        raise RecordStoreError("records need a 'model' column")
    ids = [_to_text(v) for v in df["query_id"]] if "query_id" in df.columns else [""] * n
    if "" in ids:
        if "query" not in df.columns:
            raise RecordStoreError("records need 'query_id', or 'query' (and 'benchmark') to derive it")
        bench = [_to_text(b) for b in df["benchmark"]] if "benchmark" in df.columns else [""] * n
        queries = [_to_text(q) for q in df["query"]]
        df["query_id"] = [i or (query_key(b, q) if q else "") for i, b, q in zip(ids, bench, queries)]
    out: dict[str, Any] = {}
    for col, dtype in COLUMNS.items():
        default = _default(col)
        if col not in df.columns:
            out[col] = pd.Series([default] * n, dtype=dtype)
            continue
        src = df[col].reset_index(drop=True)
        if dtype == "string":
            # fast path only when every cell already is a string (an object column may hold lists)
            if pd.api.types.is_string_dtype(src) and not src.isna().any():
                out[col] = src.astype("string")
            else:
                out[col] = pd.Series([_to_text(v) for v in src], dtype="string")
                if col in DEFAULTS:
                    out[col] = out[col].mask(out[col] == "", default)
        else:
            num = pd.to_numeric(src, errors="coerce")
            if dtype == "int64":
                bad = num.notna() & (num != np.floor(num.fillna(0)))
                if bad.any():
                    raise RecordStoreError(f"column '{col}' needs whole numbers, got {src[bad].iloc[0]!r}")
                num = num.fillna(default)
            elif col in DEFAULTS and not (isinstance(default, float) and math.isnan(default)):
                num = num.fillna(default)
            out[col] = num.astype(dtype)
    result = pd.DataFrame(out)
    for col in KEY:
        if n and (result[col] == "").any():
            raise RecordStoreError(f"records need a non-empty '{col}' (part of the record key)")
    return result


class RecordStore:
    """Append-only, resumable record table in a directory (created on first use)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise RecordStoreError(f"{self.path}: records store must be a directory, found a file")
        self._keys: set[tuple[str, str, str]] = set()
        self._keyed_parts: set[str] = set()
        self._mutex = threading.RLock()  # threads sharing this instance; other processes use the file lock
        if (self.path / META_FILE).exists():
            self._check_meta()

    # -- metadata -------------------------------------------------------------------------------
    def _check_meta(self) -> dict[str, Any]:
        meta_path = self.path / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise RecordStoreError(f"{meta_path}: unreadable store metadata ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise RecordStoreError(f"{self.path}: not an atlas records store (meta.json has no format '{FORMAT_NAME}')")
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordStoreError(
                f"{self.path}: records schema version {version}, this atlas-router reads version {SCHEMA_VERSION}"
            )
        return meta

    def _ensure_dir(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / META_FILE
        if meta_path.exists():
            self._check_meta()
            return
        if any(self.path.glob("part-*.parquet")):
            raise RecordStoreError(f"{self.path}: part files without meta.json; not an atlas records store")
        meta = {"format": FORMAT_NAME, "schema_version": SCHEMA_VERSION, "columns": COLUMNS, "key": list(KEY)}
        self._write_atomic(meta_path, json.dumps(meta, indent=2).encode())

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive writer lock across threads and processes (readers never block)."""
        self._ensure_dir()
        with self._mutex, open(self.path / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._finish_compaction()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- parts ----------------------------------------------------------------------------------
    def _journal(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / COMPACT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def _superseded(self) -> set[str]:
        """Parts a compaction has replaced: only once its merged part is in place."""
        journal = self._journal()
        if journal and (self.path / journal["merged"]).exists():
            return set(journal["replaces"])
        return set()

    def parts(self) -> list[Path]:
        """Live part files in write order (parts a finished compaction replaced are left out)."""
        if not self.path.is_dir():
            return []
        gone = self._superseded()
        return sorted(p for p in self.path.glob("part-*.parquet") if p.name not in gone)

    def _finish_compaction(self) -> None:
        """Complete or roll back a compaction that stopped half-way (called under the writer lock)."""
        journal = self._journal()
        if journal is None:
            return
        if (self.path / journal["merged"]).exists():
            for name in journal["replaces"]:
                (self.path / name).unlink(missing_ok=True)
        else:
            (self.path / f".tmp-{journal['merged']}").unlink(missing_ok=True)
        (self.path / COMPACT_FILE).unlink(missing_ok=True)

    def _new_part_path(self) -> Path:
        return self.path / f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"

    def _write_tmp_part(self, table: pa.Table) -> tuple[Path, Path]:
        final = self._new_part_path()
        tmp = final.with_name(f".tmp-{final.name}")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        return tmp, final

    def _write_part(self, table: pa.Table) -> Path:
        tmp, final = self._write_tmp_part(table)
        os.replace(tmp, final)
        return final

    @staticmethod
    def _retry(fn: Any) -> Any:
        """Run a read, again if a concurrent compaction removed a part between listing and reading."""
        for attempt in range(5):
            try:
                return fn()
            except FileNotFoundError:
                if attempt == 4:
                    raise
                time.sleep(0.05)
        return None

    # -- public API -----------------------------------------------------------------------------
    def keys(self) -> set[tuple[str, str, str]]:
        """Every (query_id, model, tool) present. Cached; only parts new since the last call are read."""
        with self._mutex:
            return self._retry(self._refresh_keys)

    def _refresh_keys(self) -> set[tuple[str, str, str]]:
        parts = self.parts()
        names = {p.name for p in parts}
        if not self._keyed_parts <= names:  # compacted (or edited) by someone else: start over
            self._keys, self._keyed_parts = set(), set()
        for part in parts:
            if part.name in self._keyed_parts:
                continue
            table = pq.read_table(part, columns=list(KEY))
            cols = [table.column(c).to_pylist() for c in KEY]
            self._keys.update(zip(*cols))
            self._keyed_parts.add(part.name)
        return set(self._keys)

    def append(self, rows: pd.DataFrame | Sequence[dict[str, Any]]) -> int:
        """Add the rows whose key is not in the store yet (first one wins within ``rows``); returns how many."""
        df = normalize(rows)
        if df.empty:
            return 0
        with self._locked():
            self.keys()
            key_list = list(zip(*(df[c].tolist() for c in KEY)))
            seen = self._keys
            fresh: set[tuple[str, str, str]] = set()
            keep = np.zeros(len(df), dtype=bool)
            for i, k in enumerate(key_list):
                if k not in seen and k not in fresh:
                    fresh.add(k)
                    keep[i] = True
            if not keep.any():
                return 0
            new = df[keep]
            part = self._write_part(pa.Table.from_pandas(new, schema=ARROW_SCHEMA, preserve_index=False))
            self._keys |= fresh
            self._keyed_parts.add(part.name)
            return int(keep.sum())

    def _table(self, columns: list[str] | None) -> pa.Table:
        return self._retry(lambda: self._read_parts(columns))

    def _read_parts(self, columns: list[str] | None) -> pa.Table:
        parts = self.parts()
        schema = ARROW_SCHEMA if columns is None else pa.schema([ARROW_SCHEMA.field(c) for c in columns])
        if not parts:
            return schema.empty_table()
        dataset = pads.dataset([str(p) for p in parts], format="parquet", schema=ARROW_SCHEMA)
        return dataset.to_table(columns=columns)

    def load(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All records as a DataFrame with schema dtypes (strings are Arrow-backed ``string``)."""
        cols = list(columns) if columns is not None else None
        if cols is not None:
            unknown = [c for c in cols if c not in COLUMNS]
            if unknown:
                raise RecordStoreError(f"unknown record columns: {', '.join(unknown)} (schema: {', '.join(COLUMNS)})")
        table = self._table(cols)
        string_type = pd.StringDtype("pyarrow")
        return table.to_pandas(
            types_mapper={pa.string(): string_type, pa.large_string(): string_type}.get,
            self_destruct=True,
        )

    def to_arrow(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The records as one Arrow table (for DuckDB or zero-copy consumers)."""
        return self._table(list(columns) if columns is not None else None)

    def __len__(self) -> int:
        return self._retry(lambda: sum(pq.ParquetFile(p).metadata.num_rows for p in self.parts()))

    def compact(self) -> int:
        """Merge all parts into one; returns the number of parts replaced. Safe to interrupt at any point."""
        with self._locked():
            self.keys()
            parts = self.parts()
            if len(parts) <= 1:
                return 0
            tmp, merged = self._write_tmp_part(self._table(None))
            # Journal before the merged part appears: a crash leaves either the old parts or the merged one.
            journal = {"replaces": [p.name for p in parts], "merged": merged.name}
            self._write_atomic(self.path / COMPACT_FILE, json.dumps(journal).encode())
            os.replace(tmp, merged)
            self._finish_compaction()
            self._keyed_parts = {merged.name}
            return len(parts)
