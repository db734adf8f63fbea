"""Records frames for routing tests: the public LLMRouter table, and a synthetic one with several tools.

The LLMRouter table goes through the project's own importer (``records.importers.read_llmrouter``): cost
is estimated from text length times each model's price in default_llm.json (see that module).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from atlas_router.records.schema import query_key

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LLMROUTER = SHARED_DATA / "routing" / "llmrouter"


def llmrouter_records(directory: Path = LLMROUTER) -> pd.DataFrame:
    """train.json joined with default_query_train.jsonl (task names) and default_llm.json (prices)."""
    from atlas_router.records.importers import read_llmrouter

    return read_llmrouter(directory / "train.json", directory / "default_query_train.jsonl",
                          directory / "default_llm.json").records


@functools.lru_cache(maxsize=1)
def llmrouter_frame() -> pd.DataFrame:
    """The LLMRouter records, read once per test process (callers must not modify it)."""
    return llmrouter_records()


@functools.lru_cache(maxsize=1)
def embedding_cache_dir() -> str:
    """One embedding cache per test process: MiniLM encodes each LLMRouter question once per run."""
    return tempfile.mkdtemp(prefix="atlas-embed-cache-")


TOPICS = {
    "arith": ["What is {a} plus {b}?", "Compute {a} times {b}.", "Add {a} and {b} then subtract {c}."],
    "code": ["Write a Python function that returns {a} squared.", "Implement a sort of {a} numbers in Python.",
             "Write code to reverse the list of length {a}."],
    "facts": ["Who wrote the novel number {a}?", "What is the capital of country {a}?",
              "In which year did event {a} happen?"],
}
# accuracy of each (model, tool) pair per topic: tools help where they should
PAIR_SKILL = {
    ("small", "none"): {"arith": 0.45, "code": 0.35, "facts": 0.55},
    ("small", "python_code"): {"arith": 0.9, "code": 0.8, "facts": 0.2},
    ("small", "web_search"): {"arith": 0.3, "code": 0.2, "facts": 0.9},
    ("large", "none"): {"arith": 0.75, "code": 0.7, "facts": 0.7},
    ("large", "python_code"): {"arith": 0.95, "code": 0.9, "facts": 0.3},
    ("large", "web_search"): {"arith": 0.5, "code": 0.4, "facts": 0.95},
}
PRICE = {"small": 0.1, "large": 1.0}
TOOL_CALLS = {"none": 1, "python_code": 2, "web_search": 2}


def synthetic_records(n_per_topic: int = 60, seed: int = 0) -> pd.DataFrame:
    """Three topics x six (model, tool) pairs with known skills; binary scores drawn from them."""
    rng = np.random.default_rng(seed)
    rows = []
    for topic, templates in TOPICS.items():
        for i in range(n_per_topic):
            a, b, c = rng.integers(2, 999, 3)
            q = templates[i % len(templates)].format(a=a, b=b, c=c) + f" (case {i})"
            qid = query_key(topic, q)
            tin = len(q) // 4 + 10
            for (model, tool), skill in PAIR_SKILL.items():
                tout = 40 * TOOL_CALLS[tool]
                rows.append({
                    "query_id": qid, "benchmark": topic, "query": q, "model": model, "tool": tool,
                    "score": float(rng.random() < skill[topic]), "input_tokens": tin * TOOL_CALLS[tool],
                    "output_tokens": tout, "calls": TOOL_CALLS[tool],
                    "cost": (tin * TOOL_CALLS[tool] + tout) * PRICE[model] / 1e6, "source": "synthetic",
                })
    return pd.DataFrame(rows)
