"""A directory of records: append-only Parquet parts, deduplicated on (query_id, model, tool).

Why this layout: collection runs for hours and gets interrupted, so every ``append`` writes one new
part file atomically (temporary name, then ``os.replace``) and never touches older parts; a rerun asks
``keys()`` what is already there and only adds the rest. Parquet keeps the table columnar so loading a
million records takes seconds and routers can read only the columns they need.

Layout of a store directory::

    meta.json                 {"format": "atlas-records", "schema_version": 1}
    part-<ns>-<rand>.parquet  one per append (or one after ``compact()``)
    compact.json              only during a compaction: the parts it replaces and the merged part
    quarantine/               parts ``repair()`` found unreadable (their readable rows were rewritten)
    .lock                     advisory lock serialising writers (appends, compaction, repair)

A part that cannot be read (truncated, garbled, not Parquet) stops every read with one line naming it;
``repair()`` (``atlas records repair DIR``) moves it to ``quarantine/`` and keeps its readable row groups.

Migration rule: parts written before a column was added to the schema read with that column's default
("" for text); a store whose ``meta.json`` has a newer ``schema_version`` is refused with a one-line error.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from atlas_router.errors import AtlasError
from atlas_router.records.schema import COLUMNS, KEY, SCHEMA_VERSION, query_key

META_FILE = "meta.json"
COMPACT_FILE = "compact.json"
QUARANTINE_DIR = "quarantine"
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

# Parts carry page checksums and reads verify them, so a garbled part fails loudly instead of reading wrong values.
PARQUET_FORMAT = pads.ParquetFileFormat(
    default_fragment_scan_options=pads.ParquetFragmentScanOptions(page_checksum_verification=True))

_ARROW_TYPES = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}
ARROW_SCHEMA = pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in COLUMNS.items()])


class RecordStoreError(AtlasError):
    """A store directory that cannot be used: foreign files, newer schema, bad rows."""


class CorruptPartError(RecordStoreError):
    """A part file that cannot be read; the message names it and the command that repairs the store."""

    def __init__(self, store: Path, part: Path, cause: BaseException | str) -> None:
        if isinstance(cause, str):
            why = cause
        else:
            text = str(cause).strip().splitlines()
            why = f"{type(cause).__name__}: {text[0][:160]}" if text else type(cause).__name__
        super().__init__(f"{part}: corrupt records part ({why}); run 'atlas records repair {store}' to quarantine it "
                         "and keep every readable row")
        self.part = part


@dataclass
class RepairReport:
    """What ``RecordStore.repair`` did: parts checked, parts quarantined, rows kept and lost."""

    parts: int
    quarantined: list[str]
    rows_kept: int  # readable rows of quarantined parts, rewritten into a new part
    rows_lost: int | None  # rows of quarantined parts that could not be read (None: unknown, no footer)
    rows: int  # rows in the store after the repair

    def summary(self) -> dict[str, Any]:
        return asdict(self)


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
            newer = isinstance(version, int) and version > SCHEMA_VERSION
            raise RecordStoreError(
                f"{self.path}: records schema version {version}, this atlas-router reads version {SCHEMA_VERSION}"
                + ("; upgrade atlas-router to read it" if newer else "")
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
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
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
            table = self._read_part(part, list(KEY))
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
        try:
            dataset = pads.dataset([str(p) for p in parts], format=PARQUET_FORMAT, schema=ARROW_SCHEMA)
            table = dataset.to_table(columns=columns)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError) as err:
            for part in parts:  # name the part that fails (raises), else report the store-wide cause
                self._read_part(part, columns)
            raise RecordStoreError(f"{self.path}: cannot read records ({type(err).__name__}: {err})") from None
        return _fill_defaults(table)

    def _read_part(self, part: Path, columns: list[str] | None) -> pa.Table:
        """One part with the store schema (columns it lacks get their defaults); a broken part raises
        ``CorruptPartError`` naming it."""
        try:
            table = pads.dataset(str(part), format=PARQUET_FORMAT, schema=ARROW_SCHEMA).to_table(columns=columns)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError) as err:
            raise CorruptPartError(self.path, part, err) from None
        return _fill_defaults(table)

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
        return self._retry(lambda: sum(self._part_rows(p) for p in self.parts()))

    def _part_rows(self, part: Path) -> int:
        try:
            return pq.ParquetFile(part).metadata.num_rows
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError) as err:
            raise CorruptPartError(self.path, part, err) from None

    def check(self) -> list[tuple[Path, str]]:
        """Every unreadable part with its cause (reads each part in full)."""
        bad = []
        for part in self.parts():
            try:
                self._read_part(part, None)
            except CorruptPartError as err:
                bad.append((part, str(err)))
        return bad

    def repair(self) -> RepairReport:
        """Move unreadable parts to ``quarantine/`` and rewrite their readable row groups as a new part.

        Healthy parts are not touched. Rows already held by a healthy part are not written twice, so a
        repair that stopped half-way can simply run again.
        """
        with self._locked():
            parts = self.parts()
            bad = [p for p, _ in self.check()]
            healthy = [p for p in parts if p not in bad]
            held: set[tuple[str, str, str]] = set()
            for part in healthy:
                table = self._read_part(part, list(KEY))
                held.update(zip(*(table.column(c).to_pylist() for c in KEY)))
            kept, lost, unknown = 0, 0, False
            quarantine = self.path / QUARANTINE_DIR
            for part in bad:
                table, n_lost = self._salvage(part)
                if n_lost is None:
                    unknown = True
                else:
                    lost += n_lost
                if table is not None and table.num_rows:
                    keys = list(zip(*(table.column(c).to_pylist() for c in KEY)))
                    mask = [k not in held for k in keys]
                    table = table.filter(pa.array(mask, type=pa.bool_()))
                    held.update(k for k, m in zip(keys, mask) if m)
                    if table.num_rows:
                        self._write_part(table)
                        kept += table.num_rows
                quarantine.mkdir(exist_ok=True)
                os.replace(part, quarantine / part.name)
            self._keys, self._keyed_parts = set(), set()
            rows = sum(self._part_rows(p) for p in self.parts())
        return RepairReport(parts=len(parts), quarantined=[p.name for p in bad], rows_kept=kept,
                            rows_lost=None if unknown else lost, rows=rows)

    @staticmethod
    def _salvage(part: Path) -> tuple[pa.Table | None, int | None]:
        """(readable rows with the store schema, rows lost) of a broken part; row groups are the unit."""
        try:
            pf = pq.ParquetFile(part, page_checksum_verification=True)
        except (pa.ArrowException, OSError, ValueError):
            return None, None  # no readable footer: nothing can be located in the file
        tables, lost = [], 0
        for i in range(pf.num_row_groups):
            try:
                rg = pf.read_row_group(i)
                tables.append(_fill_defaults(_conform(rg)))
            except (pa.ArrowException, OSError, ValueError, KeyError):
                lost += pf.metadata.row_group(i).num_rows
        return (pa.concat_tables(tables) if tables else None), lost

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


def _conform(table: pa.Table) -> pa.Table:
    """A table with exactly the store's columns and types (absent columns null, filled later)."""
    cols = []
    for field in ARROW_SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, type=field.type))
    return pa.Table.from_arrays(cols, schema=ARROW_SCHEMA)


def _fill_defaults(table: pa.Table) -> pa.Table:
    """Nulls (columns a part lacks because it predates them) replaced by the column's default."""
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if col.null_count and name in COLUMNS:
            default = _default(name)
            table = table.set_column(i, name, pc.fill_null(col, pa.scalar(default, type=col.type)))
    return table
