"""Embeddings from an OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM, TEI, Ollama, OpenAI, ...).

This is how a large encoder such as gte-Qwen2-7B-instruct is used: serve it with vLLM and point the
spec ``openai:MODEL@http://HOST:PORT/v1`` at it. The key, if the server wants one, is read from
``$ATLAS_EMBED_API_KEY``. Transient failures (429, 5xx, timeouts, dropped connections) are retried.
"""

from __future__ import annotations

import httpx
import numpy as np

from atlas_router.config import secret
from atlas_router.core.http import RETRY_STATUS, send_with_retries_sync, sync_client
from atlas_router.errors import BackendError
from atlas_router.routers.encoders.base import Encoder
from atlas_router.routers.encoders.cache import EmbeddingCache

API_KEY_ENV = "ATLAS_EMBED_API_KEY"


class OpenAIEmbeddingEncoder(Encoder):
    """One POST per batch of texts; rows come back in input order whatever order the server uses."""

    batch_size = 64

    def __init__(self, model: str, base_url: str, cache: EmbeddingCache | None = None,
                 timeout_s: float = 60.0, max_retries: int = 3) -> None:
        super().__init__(cache)
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.name = f"openai:{model}"
        self.spec = f"openai:{model}@{self.base_url}"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._dim: int | None = None
        headers = {"content-type": "application/json"}
        key = secret(API_KEY_ENV)
        if key:
            headers["authorization"] = f"Bearer {key}"
        self._client = sync_client(timeout_s, headers=headers)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._post(["dimension probe"]).shape[1])
        return self._dim

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        vecs = self._post(texts)
        self._dim = vecs.shape[1]
        return vecs

    def _post(self, texts: list[str]) -> np.ndarray:
        url = f"{self.base_url}/embeddings"
        try:
            resp = send_with_retries_sync(lambda: self._client.post(url, json={"model": self.model, "input": texts}),
                                          self.max_retries)
        except httpx.TimeoutException:
            raise BackendError(f"embeddings endpoint {url} failed after {self.max_retries + 1} tries: "
                               f"timeout after {self.timeout_s:g}s") from None
        except httpx.TransportError as err:
            raise BackendError(f"embeddings endpoint {url} failed after {self.max_retries + 1} tries: "
                               f"{type(err).__name__}: {err}") from None
        if resp.status_code in RETRY_STATUS:
            raise BackendError(f"embeddings endpoint {url} failed after {self.max_retries + 1} tries: "
                               f"HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise BackendError(f"embeddings endpoint {url} answered HTTP {resp.status_code}: {resp.text[:200]}")
        return self._parse(resp, len(texts), url)

    @staticmethod
    def _parse(resp: httpx.Response, n: int, url: str) -> np.ndarray:
        try:
            data = resp.json()["data"]
            rows = sorted(data, key=lambda d: d.get("index", 0))
            vecs = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as err:
            raise BackendError(f"embeddings endpoint {url} sent a malformed body ({type(err).__name__}: {err})") from None
        if vecs.ndim != 2 or vecs.shape[0] != n:
            raise BackendError(f"embeddings endpoint {url} returned {vecs.shape[0] if vecs.ndim else 0} rows for {n} texts")
        return vecs

    def close(self) -> None:
        self._client.close()
