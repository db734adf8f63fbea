"""Run manifests: what an evaluation output was computed from, written beside the output.

A number in a report is only worth what can be traced: which records (hash), which encoder, which
clusters (centroid hash), which K and seeds, which library versions. ``run_manifest`` gathers them,
reusing each router's own ``Router.manifest()`` and ``routers.base.library_versions()``;
``write_output`` writes a JSON output and ``<output>.manifest.json`` beside it, both atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.routers.base import library_versions
from atlas_router.routers.table import records_hash

FORMAT = "atlas-run"
VERSION = 1
SUFFIX = ".manifest.json"


def manifest_path(output: str | Path) -> Path:
    """``<output>.manifest.json`` beside the output."""
    p = Path(output).expanduser()
    return p.with_name(p.name + SUFFIX)


def array_hash(values: Any) -> str | None:
    """Short sha256 of an array's float64 bytes (None for None)."""
    if values is None:
        return None
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    return hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]


def encoder_info(encoder: Any) -> dict[str, Any] | None:
    """Name, spec, width and a hash of them: what identifies an encoder's embeddings."""
    if encoder is None:
        return None
    name, spec = getattr(encoder, "name", None), getattr(encoder, "spec", None)
    dim = getattr(encoder, "dim", None)
    blob = f"{name}\x1f{spec}\x1f{dim}".encode()
    return {"name": name, "spec": spec, "dim": dim, "hash": hashlib.sha256(blob).hexdigest()[:16]}


def router_info(router: Any) -> dict[str, Any]:
    """A router's own manifest (versions moved to the run level) plus the fitted K and centroid hash."""
    info = dict(router.manifest())
    info.pop("versions", None)
    info["n_clusters"] = getattr(router, "n_clusters_", None)
    info["centroids_hash"] = array_hash(getattr(router, "centroids_", None))
    return info


def data_info(records: pd.DataFrame, path: str | Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"hash": records_hash(records), "n_records": int(len(records)),
                            "n_queries": int(records["query_id"].nunique()) if "query_id" in records else None}
    if path is not None:
        info["path"] = str(Path(path).expanduser().resolve())
    return info


def run_manifest(command: str, *, data: Mapping[str, pd.DataFrame] | None = None, records_path: str | Path | None = None,
                 encoders: Mapping[str, Any] | None = None, routers: Mapping[str, Any] | None = None,
                 seeds: Mapping[str, int] | None = None, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of one evaluation run. ``data`` names record sets (e.g. all/train/test)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "command": command,
        "argv": list(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {name: data_info(df, records_path if name == "all" else None) for name, df in (data or {}).items()},
        "encoders": {name: encoder_info(enc) for name, enc in (encoders or {}).items()},
        "routers": {name: router_info(r) for name, r in (routers or {}).items()},
        "seeds": dict(seeds or {}),
        "settings": {k: _plain(v) for k, v in (settings or {}).items()},
        "versions": library_versions(),
    }


def _plain(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_manifest(output: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` beside ``output``; returns its path."""
    path = manifest_path(output)
    _write_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def write_output(output: str | Path, payload: Any, manifest: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write a JSON evaluation output and its manifest beside it; returns both paths."""
    out = Path(output).expanduser()
    _write_atomic(out, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    return out, write_manifest(out, manifest)
