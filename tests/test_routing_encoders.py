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


# --- ONNX Runtime backend ----------------------------------------------------------------------------

LONGER = TEXTS + [
    "Explain, step by step, how to compute the derivative of x squared times the sine of x, and check it.",
    "A train leaves at 3 pm travelling 60 km/h; another leaves at 4 pm at 80 km/h. When does it catch up?",
    "résumé naïve café — unicode and punctuation!? 🙂",
    "",
]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    """A fresh ONNX file cache for this module: the first encoder exports, later ones find the file."""
    import os

    d = tmp_path_factory.mktemp("onnx-cache")
    old = os.environ.get("ATLAS_ONNX_CACHE_DIR")
    os.environ["ATLAS_ONNX_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("ATLAS_ONNX_CACHE_DIR", None)
    else:
        os.environ["ATLAS_ONNX_CACHE_DIR"] = old


def test_onnx_fp32_gives_the_vectors_of_sentence_transformers(minilm, onnx_dir):
    enc = build_encoder("onnx", cache=False)
    assert enc.spec == "onnx:fp32,max_length=256" and enc.max_length == 256 and enc.dim == 384
    got, ref = enc.encode(LONGER), minilm.encode(LONGER)
    cos = np.sum(got * ref, axis=1)
    print("onnx fp32 cosine vs sentence-transformers:", cos.round(6).tolist())
    assert got.dtype == np.float32 and got.shape == (len(LONGER), 384)
    assert cos.min() >= 0.999
    assert list(onnx_dir.glob("*/model.fp32.onnx"))  # exported once into the cache folder
    # a batch is tokenised, length-sorted and padded per inner batch: results do not depend on the order
    enc.inner_batch_size = 3
    assert np.allclose(enc.encode(LONGER[::-1])[::-1], got, atol=1e-5)


def test_onnx_int8_reports_how_close_it_stays(minilm, onnx_dir):
    enc = build_encoder("onnx:int8", cache=False)
    got, ref = enc.encode(LONGER), minilm.encode(LONGER)
    cos = np.sum(got * ref, axis=1)
    print("onnx int8 cosine vs sentence-transformers:", cos.round(5).tolist())
    assert enc.name != build_encoder("onnx", cache=False).name  # int8 vectors never share fp32 cache entries
    # close (~0.99 measured) but below the 0.999 the default fp32 keeps: int8 is an option, not the default
    assert np.median(cos) >= 0.98 and cos.min() >= 0.95
    sim = got @ got.T
    assert sim[0, 1] > sim[0, 2]  # still puts two arithmetic questions closer than arithmetic and literature


def test_onnx_max_length_truncates_like_sentence_transformers(minilm, onnx_dir):
    short = build_encoder("onnx:max_length=8", cache=False)
    a = "Compute the sum of these numbers: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12"
    b = "Compute the sum of these numbers: please tell me the capital of France instead"
    va, vb = short.encode([a, b])
    assert np.allclose(va, vb, atol=1e-6)  # they differ only past the 8th token (CLS ... SEP included)
    full = build_encoder("onnx", cache=False).encode([a, b])
    assert float(full[0] @ full[1]) < 0.99
    st = minilm._loaded()
    old = st.max_seq_length
    st.max_seq_length = 8
    try:
        ref = minilm.encode([a])
    finally:
        st.max_seq_length = old
    assert float(va @ ref[0]) >= 0.999


def test_onnx_export_and_embeddings_are_cached(onnx_dir, tmp_path, monkeypatch):
    from atlas_router.routers.encoders import onnx as onnx_mod

    monkeypatch.setattr(onnx_mod, "_export_fp32", lambda *a: (_ for _ in ()).throw(AssertionError("re-exported")))
    first = build_encoder("onnx", cache=EmbeddingCache(tmp_path))
    vecs = first.encode(TEXTS)  # the file exported by an earlier test is found, not made again
    second = build_encoder("onnx", cache=EmbeddingCache(tmp_path))
    seen: list[str] = []
    second._encode_batch = lambda texts: seen.extend(texts)  # would break if called
    assert np.array_equal(second.encode(TEXTS), vecs) and seen == []


def test_onnx_spec_options_and_errors():
    from atlas_router.routers.encoders.onnx import parse_options

    assert parse_options("int8, max_length=128,threads=2") == {"quantize": "int8", "max_length": 128, "threads": 2}
    assert parse_options("") == {}
    for spec, msg in [("onnx:int4", "unknown option 'int4'"), ("onnx:max_length=x", "whole number"),
                      ("onnx:max_length=0", "at least 1"), ("onnx:model=/no/such/dir", "not a local sentence")]:
        with pytest.raises(AtlasError, match=msg) as err:
            build_encoder(spec, cache=False)
        assert "\n" not in str(err.value)


def _plan_cost(lengths: list[int], runs: list[tuple[int, int]], run_cost: float) -> float:
    return sum((end - start) * lengths[start] + run_cost for start, end in runs)


def test_onnx_padding_plan_is_the_cheapest_cut_of_length_sorted_texts():
    from atlas_router.routers.encoders.onnx import padding_plan

    rng = random.Random(7)
    for trial in range(200):
        n, rows, run_cost = rng.randint(1, 9), rng.randint(1, 4), rng.choice([0.0, 3.0, 16.0])
        lengths = sorted((rng.randint(1, 60) for _ in range(n)), reverse=True)
        runs = padding_plan(np.array(lengths), rows, run_cost)
        assert runs[0][0] == 0 and runs[-1][1] == n and all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
        assert all(0 < end - start <= rows for start, end in runs)
        # brute force over every way to cut the sorted list into runs of at most ``rows``
        best = float("inf")
        for mask in range(1 << (n - 1)):
            cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
            split = list(zip(cuts, cuts[1:]))
            if all(end - start <= rows for start, end in split):
                best = min(best, _plan_cost(lengths, split, run_cost))
        assert _plan_cost(lengths, runs, run_cost) == pytest.approx(best)
    # equal lengths: full runs, as fixed batching would make; a steep drop: cut there, not at the batch size
    assert padding_plan(np.array([10] * 8), 4) == [(0, 4), (4, 8)]
    assert padding_plan(np.array([256, 250, 30, 28, 27, 25]), 64) == [(0, 2), (2, 6)]
