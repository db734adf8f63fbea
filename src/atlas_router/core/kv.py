"""One key-value table in one SQLite file, shared by the disk caches (model replies, embeddings).

WAL mode: readers never block writers of other processes (a collection run is several processes), and
``synchronous=NORMAL`` skips the fsync per commit while staying crash-safe.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_kv(path: Path, table: str, value: str, kind: str) -> sqlite3.Connection:
    """A connection (usable from any thread behind the caller's lock) to ``table(key, <value> <kind>)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, {value} {kind} NOT NULL)")
    db.commit()
    return db
