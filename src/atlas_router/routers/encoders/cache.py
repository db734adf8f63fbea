"""On-disk embedding cache keyed by (encoder name, text hash), so evaluation reruns encode nothing.

One SQLite table (``core.kv``): safe across processes, and a lookup of thousands of keys is one query
per chunk. Vectors are stored as raw float32 bytes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from atlas_router.config import cache_dir
from atlas_router.core.kv import open_kv

_CHUNK = 500  # keys per SELECT (SQLite's variable limit is 999 on old builds)


def default_cache_dir() -> Path:
    """``$ATLAS_EMBED_CACHE_DIR``, else ~/.cache/atlas-router/embeddings."""
    return cache_dir("embeddings")


def text_key(encoder_name: str, text: str) -> str:
    """Cache key: the same text under the same encoder, the same key."""
    return hashlib.sha256(f"{encoder_name}\x1f{text}".encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache:
    """Embeddings by (encoder, text); reads never block writers of other processes."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory).expanduser() if directory else default_cache_dir()
        self.path = self.dir / "embeddings.sqlite"
        self._lock = threading.Lock()
        self._db = open_kv(self.path, "vectors", "vec", "BLOB")

    def get_many(self, encoder_name: str, texts: list[str]) -> dict[str, np.ndarray]:
        """The cached embeddings among ``texts`` (text -> vector); missing texts are left out."""
        by_key = {text_key(encoder_name, t): t for t in texts}
        keys = list(by_key)
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for key, blob in self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                    found[by_key[key]] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, encoder_name: str, vectors: dict[str, np.ndarray]) -> None:
        rows = [(text_key(encoder_name, t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in vectors.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
