"""Helpers shared by CLI commands: running coroutines, printing JSON, reading the pool."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from atlas_router.errors import AtlasError
from atlas_router.pool.pool import Pool

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from a synchronous command."""
    return asyncio.run(coro)


def print_json(data: Any) -> None:
    """JSON on stdout, one document, UTF-8."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def load_pool(path: str | None) -> Pool:
    """The pool of ``--pool``, or the embedded default."""
    return Pool.load(path)


def load_records(directory: str | Path, what: str = "--records") -> "pd.DataFrame":
    """All records of a RecordStore directory (``what``: the option that named it); a one-line error when the
    directory is missing or holds none."""
    from atlas_router.records.store import RecordStore

    path = Path(directory).expanduser()
    if not path.is_dir():
        raise AtlasError(f"{what}: records directory not found: {path} (make one with 'atlas import' or "
                         "'atlas collect')")
    df = RecordStore(path).load()
    if df.empty:
        raise AtlasError(f"{path}: no records in this store ({what})")
    return df
