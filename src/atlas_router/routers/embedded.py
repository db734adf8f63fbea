"""What ships for the embedded default pool: its records on the built-in suite and the router fitted on them.

``atlas ask`` and ``atlas serve`` route with ``default_router_path()`` when no pair or router is named;
``atlas demo`` replays ``shipped_records_path()``. Both are made by ``atlas demo --collect --refit``
(the manifest beside them holds the exact commands).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atlas_router.errors import AtlasError

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "resources" / "embedded"
ROUTER_FILE = "router.atlas"
RECORDS_FILE = "records.parquet"
MANIFEST_FILE = "manifest.json"


def default_router_path() -> Path:
    """The shipped router for the embedded default pool (fitted on the suite's train split)."""
    path = EMBEDDED_DIR / ROUTER_FILE
    if not path.is_file():
        raise AtlasError(f"{path}: the shipped router is missing; rebuild it with `atlas demo --refit`")
    return path


def shipped_records_path() -> Path:
    """The shipped records of the embedded pool on the whole built-in suite (one Parquet file)."""
    path = EMBEDDED_DIR / RECORDS_FILE
    if not path.is_file():
        raise AtlasError(f"{path}: the shipped records are missing; rebuild them with `atlas demo --collect`")
    return path


def shipped_manifest() -> dict[str, Any]:
    """How the shipped files were made: commands, pool, engine, counts."""
    path = EMBEDDED_DIR / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
