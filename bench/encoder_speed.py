"""Queries/s of the ONNX MiniLM against sentence-transformers on the same texts, max length, batch size
and threads, measured in the same run, with the cosine of their vectors.

Texts: the LLMRouter queries in ../shared/data (distinct, no cache on either side). Each encoder is
warmed up first (the ONNX export happens once and is cached on disk, outside the timings). Best of
--repeat. Binding check: the faster ONNX variant whose vectors hold cosine >= 0.999 against
sentence-transformers (fp32, or int8 where it holds) is >= 1.3x sentence-transformers.

    python bench/encoder_speed.py [--queries 1000] [--max-length 256] [--batch 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))
from _report import check, finish  # noqa: E402

COSINE_FLOOR = 0.999
SPEED_FLOOR = 1.3


def texts(n: int) -> list[str]:
    from support.routing_data import llmrouter_records

    queries = list(dict.fromkeys(llmrouter_records()["query"]))
    queries = (queries * (n // len(queries) + 1))[:n]
    return [f"{q} [{i}]" for i, q in enumerate(queries)]


def timed(encode, xs: list[str], repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = encode(xs)
        best = min(best, time.perf_counter() - t0)
    return len(xs) / best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=256, help="tokens kept per text (MiniLM's own: 256)")
    ap.add_argument("--batch", type=int, default=64, help="texts per forward pass, both encoders")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads, both encoders")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import torch

    from atlas_router.routers.encoders import build_encoder

    torch.set_num_threads(args.threads)
    xs = texts(args.queries)
    st = build_encoder("sentence-transformers", cache=False)
    st.inner_batch_size = args.batch
    st._loaded().max_seq_length = args.max_length
    st.encode(xs[:64])
    st_qps, ref = timed(st.encode, xs, args.repeat)
    lengths = [len(t) for t in xs]
    print(f"{len(xs)} LLMRouter queries (median {int(np.median(lengths))} chars); max length {args.max_length} "
          f"tokens, batch {args.batch}, {args.threads} threads")
    print(f"sentence-transformers (torch {torch.__version__}): {st_qps:8.1f} queries/s (baseline)")
    best = 0.0
    for quant in ("fp32", "int8"):
        enc = build_encoder(f"onnx:{quant},max_length={args.max_length},threads={args.threads}", cache=False)
        enc.inner_batch_size = args.batch
        enc.encode(xs[:64])  # export (first time only) and session start-up
        qps, vecs = timed(enc.encode, xs, args.repeat)
        cos = np.sum(vecs * ref, axis=1)
        holds = float(cos.min()) >= COSINE_FLOOR
        print(f"onnx {quant}: {qps:8.1f} queries/s  {qps / st_qps:5.2f}x sentence-transformers; cosine vs "
              f"sentence-transformers min {cos.min():.5f} mean {cos.mean():.5f} "
              f"({'holds' if holds else 'below'} {COSINE_FLOOR})")
        if quant == "fp32":
            check("onnx fp32 cosine vs sentence-transformers (min)", float(cos.min()), COSINE_FLOOR, unit="")
        if holds:
            best = max(best, qps)
    check("onnx encoder (fastest variant holding cosine) vs sentence-transformers", best / st_qps, SPEED_FLOOR)
    finish()


if __name__ == "__main__":
    main()
