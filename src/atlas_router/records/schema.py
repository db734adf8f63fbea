"""The record schema shared by collection, importers, routers, RL replay and evaluation.

A record is one (query, model, tool) outcome. ``query_id`` identifies a query across pairs so that
routers can compare pairs on the same query; it is derived from the benchmark and the query text.
"""

from __future__ import annotations

import hashlib

SCHEMA_VERSION = 1

# column -> pandas/arrow dtype name
COLUMNS: dict[str, str] = {
    "query_id": "string",      # stable id: query_key(benchmark, query)
    "benchmark": "string",     # benchmark or task name (gsm8k, human_eval, ...)
    "split": "string",         # train / test / ... ("" when unknown)
    "domain": "string",        # math, code, qa, reasoning, ... ("" when unknown)
    "query": "string",         # the question as shown to the model
    "reference": "string",     # ground truth, JSON-encoded when not a plain string ("" when unknown)
    "model": "string",
    "tool": "string",          # "none" for model-only records (all public routing tables)
    "answer": "string",        # extracted final answer
    "response": "string",      # full model output ("" when the source has none)
    "score": "float64",        # grader score in [0, 1]; NaN when not graded
    "cost": "float64",         # currency units for this call (tokens x price)
    "input_tokens": "int64",
    "output_tokens": "int64",
    "latency_s": "float64",
    "calls": "int64",          # model calls made by the pair (tool loops and best-of-n make several)
    "error": "string",         # "" on success, else "Kind: cause"
    "source": "string",        # collect, llmrouter, routerbench, routellm, feedback
    "grader": "string",        # who gave the score: gold:<grader>, judge:MODEL, prm:MODEL/agg, reference:M@@T ("" unknown)
    "schema_version": "int64",
}

KEY = ("query_id", "model", "tool")


def query_key(benchmark: str, query: str) -> str:
    """Stable id of a query: same benchmark and text, same id, across runs and machines."""
    return hashlib.sha1(f"{benchmark}\x1f{query}".encode("utf-8", "surrogatepass")).hexdigest()[:16]
