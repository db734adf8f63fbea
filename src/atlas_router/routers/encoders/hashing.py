"""A bag-of-words hashing encoder (sklearn HashingVectorizer): no semantics, no weights, instant.

It exists for fast unit tests of router mechanics and for machines without any embedding model. It
only sees shared words and word pairs, so do not expect it to route as well as a sentence encoder.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer

from atlas_router.routers.encoders.base import Encoder
from atlas_router.routers.encoders.cache import EmbeddingCache


class HashingEncoder(Encoder):
    """Hashed unigram+bigram counts, L2-normalised."""

    batch_size = 4096

    def __init__(self, dim: int = 512, cache: EmbeddingCache | None = None) -> None:
        super().__init__(cache)
        self._dim = int(dim)
        self.name = f"hashing-{self._dim}"
        self.spec = f"hashing:{self._dim}"
        self._vec = HashingVectorizer(n_features=self._dim, ngram_range=(1, 2), alternate_sign=False, norm="l2")

    @property
    def dim(self) -> int:
        return self._dim

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._vec.transform(texts).toarray().astype(np.float32)
