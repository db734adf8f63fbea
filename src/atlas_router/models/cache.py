"""A disk cache of model replies keyed by (model, sampling, messages), so reruns cost nothing.

One SQLite table (``core.kv``): safe across the processes of a collection run and cheap to open.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from atlas_router.config import ModelSpec
from atlas_router.core.kv import open_kv
from atlas_router.models.base import Completion, SamplingParams


class ResponseCache:
    """Replies stored by a hash of everything that determines them."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory).expanduser() / "responses.sqlite"
        self._lock = threading.Lock()
        self._db = open_kv(self.path, "replies", "value", "TEXT")

    @staticmethod
    def key(spec: ModelSpec, params: SamplingParams, messages: list[dict[str, Any]]) -> str:
        """Hash of the model identity, sampling and messages (not of prices or timeouts)."""
        ident = {
            "backend": spec.backend,
            "model": spec.served_id,
            "where": spec.endpoint or spec.weights,
            "params": [params.temperature, params.top_p, params.max_tokens, params.seed, list(params.stop)],
            "messages": messages,
        }
        blob = json.dumps(ident, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        data = json.loads(row[0])
        data["cached"] = True
        return Completion(**data)

    def put(self, key: str, completion: Completion) -> None:
        data = completion.to_dict()
        data.pop("cached", None)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies VALUES (?, ?)", (key, json.dumps(data)))
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
