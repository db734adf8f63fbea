"""Encoders: unit-length float32 rows, the on-disk cache, MiniLM in-process, and an OpenAI-compatible
embeddings server started here (it serves the local MiniLM, so both paths must agree)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from atlas_router.errors import AtlasError, BackendError
from atlas_router.routers.encoders import EmbeddingCache, build_encoder
from atlas_router.routers.encoders.hashing import HashingEncoder
from atlas_router.routers.encoders.local import SentenceTransformerEncoder
from support.servers import running_server

TEXTS = ["What is 17 times 23?", "Compute 12 plus 30.", "Who wrote Hamlet?", "Write a Python function to sort a list."]


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    return build_encoder("sentence-transformers", cache=False)


def test_hashing_encoder_rows_are_unit_float32_and_deterministic():
    enc = build_encoder("hashing:64", cache=False)
    a, b = enc.encode(TEXTS), enc.encode(list(reversed(TEXTS)))
    assert a.dtype == np.float32 and a.shape == (4, 64) and enc.dim == 64 and enc.name == "hashing-64"
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, b[::-1])
    assert enc.encode([]).shape == (0, 64)


def test_spec_errors_are_one_line_atlas_errors():
    for spec, msg in [("nope", "unknown encoder spec"), ("hashing:x", "whole number"), ("hashing:2", "at least 8"),
                      ("openai:model", "expected openai:MODEL@"), ("openai:m@ftp://x", "expected openai:MODEL@")]:
        with pytest.raises(AtlasError, match=msg) as err:
            build_encoder(spec, cache=False)
        assert "\n" not in str(err.value)


class CountingEncoder(HashingEncoder):
    """The hashing encoder, counting the texts it really embeds (to observe cache hits)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []

    def _encode_batch(self, texts):
        self.seen += texts
        return super()._encode_batch(texts)


def test_cache_serves_repeats_across_instances_and_keys_by_encoder(tmp_path):
    cache = EmbeddingCache(tmp_path)
    first = CountingEncoder(32, cache=cache)
    a = first.encode(TEXTS + TEXTS[:2])  # duplicates in one call are embedded once
    assert sorted(first.seen) == sorted(TEXTS)
    second = CountingEncoder(32, cache=EmbeddingCache(tmp_path))  # a new process would open the same file
    b = second.encode(TEXTS[::-1])
    assert second.seen == [] and np.array_equal(b, a[:4][::-1])
    other = CountingEncoder(48, cache=cache)  # another encoder name: its own entries
    other.encode(TEXTS[:1])
    assert other.seen == TEXTS[:1] and len(cache) == 5


def test_minilm_default_from_the_package(minilm):
    emb = minilm.encode(TEXTS)
    assert minilm.name == "st:sentence-transformers/all-MiniLM-L6-v2" and minilm.spec == "sentence-transformers"
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    print("cosine arithmetic/arithmetic", sim[0, 1], "arithmetic/literature", sim[0, 2])
    assert sim[0, 1] > sim[0, 2]  # two arithmetic questions are closer than arithmetic and literature


def embeddings_app(model, calls: list[int], fail_first: int = 0) -> FastAPI:
    """An OpenAI-compatible /v1/embeddings endpoint serving ``model``; rows come back shuffled with
    their index (servers may reorder), and the first ``fail_first`` requests answer 503."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await request.json()
        calls.append(len(body["input"]))
        if len(calls) <= fail_first:
            return JSONResponse({"error": "warming up"}, status_code=503)
        if body.get("model") != "minilm-served":
            return JSONResponse({"error": {"message": "no such model"}}, status_code=404)
        vecs = model.encode(body["input"], convert_to_numpy=True)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vecs)]
        random.Random(0).shuffle(data)
        return {"object": "list", "data": data, "model": body["model"]}

    return app


def test_openai_encoder_against_a_local_embeddings_server(minilm):
    calls: list[int] = []
    with running_server(embeddings_app(minilm._loaded(), calls, fail_first=1)) as url:
        enc = build_encoder(f"openai:minilm-served@{url}/v1", cache=False)
        enc.batch_size = 3  # two requests for four texts
        remote = enc.encode(TEXTS)
        assert enc.dim == 384 and enc.name == "openai:minilm-served"
        wrong = build_encoder(f"openai:other@{url}/v1", cache=False)
        with pytest.raises(BackendError, match="HTTP 404"):
            wrong.encode(["x"])
    local = minilm.encode(TEXTS)
    print("requests (texts per call):", calls, "max |remote - local|:", float(np.abs(remote - local).max()))
    assert calls[:3] == [3, 3, 1]  # one 503 retried, then both batches
    assert np.allclose(remote, local, atol=1e-5)  # same model, same rows, in input order


def test_openai_encoder_gives_up_with_the_cause():
    from support.servers import free_port

    enc = build_encoder(f"openai:m@http://127.0.0.1:{free_port()}/v1", cache=False)
    enc.max_retries = 1
    with pytest.raises(BackendError, match="failed after 2 tries"):
        enc.encode(["hello"])
