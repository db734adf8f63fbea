"""Queries/s of the ONNX MiniLM against sentence-transformers on the same texts, max length, batch size
and threads, measured in the same run, with the cosine of their vectors.

Texts: the LLMRouter queries in ../shared/data (distinct, no cache on either side). Each encoder is
warmed up first (the ONNX export happens once and is cached on disk, outside the timings). The encoders
take turns, --repeat rounds of one timing each, and each keeps its best: a slow spell of this shared
machine then falls on every encoder alike rather than on whichever ran during it. Binding check: the faster ONNX variant whose vectors hold cosine >= 0.999 against
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


def interleaved(encoders: dict[str, object], xs: list[str], repeat: int) -> dict[str, tuple[float, np.ndarray]]:
    """Queries/s (best round) and the vectors of each encoder, timed in turns."""
    best = {name: float("inf") for name in encoders}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(repeat):
        for name, enc in encoders.items():
            t0 = time.perf_counter()
            vectors[name] = enc.encode(xs)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (len(xs) / best[name], vectors[name]) for name in encoders}


def padding_line(enc, xs: list[str], batch: int) -> str:
    """Tokens computed by fixed runs of ``batch`` length-sorted texts (sentence-transformers' batching) and
    by the ONNX encoder's padding plan, against the texts' own tokens: where the plan's gain comes from."""
    from atlas_router.routers.encoders.onnx import padding_plan

    lengths = np.sort([len(e.ids) for e in enc._tokenizer.encode_batch(xs)])[::-1]
    fixed = sum(int(lengths[i]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch))
    runs = padding_plan(lengths, batch)
    planned = sum(int(lengths[a]) * (b - a) for a, b in runs)
    own = int(lengths.sum())
    return (f"tokens computed: fixed runs of {batch} {fixed} ({fixed / own - 1:+.1%} padding), the ONNX encoder's "
            f"padding plan {planned} ({planned / own - 1:+.1%}, {len(runs)} runs); the texts hold {own}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=256, help="tokens kept per text (MiniLM's own: 256)")
    ap.add_argument("--batch", type=int, default=64, help="texts per forward pass, both encoders")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads, both encoders")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each encoder keeps its best")
    args = ap.parse_args()

    import torch

    from atlas_router.routers.encoders import build_encoder

    torch.set_num_threads(args.threads)
    xs = texts(args.queries)
    st = build_encoder("sentence-transformers", cache=False)
    st.inner_batch_size = args.batch
    st._loaded().max_seq_length = args.max_length
    st.encode(xs[:64])
    encoders: dict[str, object] = {"st": st}
    for quant in ("fp32", "int8"):
        enc = build_encoder(f"onnx:{quant},max_length={args.max_length},threads={args.threads}", cache=False)
        enc.inner_batch_size = args.batch
        enc.encode(xs[:64])  # export (first time only) and session start-up
        encoders[quant] = enc
    timings = interleaved(encoders, xs, args.repeat)
    st_qps, ref = timings["st"]
    lengths = [len(t) for t in xs]
    print(f"{len(xs)} LLMRouter queries (median {int(np.median(lengths))} chars); max length {args.max_length} "
          f"tokens, batch {args.batch}, {args.threads} threads; best of {args.repeat} rounds, encoders in turns")
    print(f"sentence-transformers (torch {torch.__version__}): {st_qps:8.1f} queries/s (baseline)")
    print(padding_line(encoders["fp32"], xs, args.batch))
    best = 0.0
    for quant in ("fp32", "int8"):
        qps, vecs = timings[quant]
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
