"""The encoder interface: texts in, L2-normalised float32 rows out, batched and cached on disk.

Routers compare queries by embedding, so every backend returns unit-length rows (a dot product is a
cosine similarity) of one fixed width. Backends only implement ``_encode_batch``; the base class does
batching, normalisation and the embedding cache, so a rerun of an evaluation encodes nothing twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from atlas_router.routers.encoders.cache import EmbeddingCache


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder(ABC):
    """Turns texts into unit-length embeddings. ``spec`` rebuilds the same encoder (see ``build_encoder``)."""

    #: identity used in cache keys and router manifests (backend + model)
    name: str
    #: the string that ``build_encoder`` turns back into this encoder
    spec: str
    batch_size: int = 64

    def __init__(self, cache: EmbeddingCache | None = None) -> None:
        self.cache = cache

    @property
    @abstractmethod
    def dim(self) -> int:
        """Width of an embedding row."""

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Embed one batch (any scale); the base class normalises."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts`` as a (len(texts), dim) float32 array with unit-length rows."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        hits: dict[str, np.ndarray] = self.cache.get_many(self.name, texts) if self.cache is not None else {}
        missing = list(dict.fromkeys(t for t in texts if t not in hits))
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            vecs = l2_normalise(self._encode_batch(batch))
            if vecs.ndim != 2 or vecs.shape[0] != len(batch):
                raise ValueError(f"encoder {self.name} returned shape {vecs.shape} for {len(batch)} texts")
            fresh.update(zip(batch, vecs))
        if fresh and self.cache is not None:
            self.cache.put_many(self.name, fresh)
        rows = [hits[t] if t in hits else fresh[t] for t in texts]
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"encoder {self.name} returned embeddings of different widths")
        return np.stack(rows).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
