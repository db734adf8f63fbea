"""Import LLMRouter / RouterDC routing tables: ``[{"question": ..., "scores": {model: score}}, ...]``.

Inputs (the files ulab-uiuc/LLMRouter ships; RouterDC uses the same scores layout, one file per benchmark):

* scores: a JSON list (or JSONL) of ``{question, scores}``; extra keys such as ``cluster_id`` are ignored;
* queries (optional): JSONL with ``task_name``, ``query``, ``ground_truth``, ``metric``, ``choices``, joined
  on the question text. It gives each record its benchmark and reference. Without it the benchmark is
  the file name (``gsm8k-train.json`` -> benchmark ``gsm8k``, split ``train``);
* models (optional): ``default_llm.json``, ``{model: {input_price, output_price, ...}}`` in currency units
  per million tokens, for the cost of each record.

Cost rule. These tables hold no token counts, so tokens are estimated from text length:
``input_tokens = ceil(len(question) / 4)`` (about four characters per token for English BPE
vocabularies) and ``output_tokens = 256`` (the pool's default ``max_tokens``, a reply budget rather
than a measured length). ``cost = (input_tokens * input_price + output_tokens * output_price) / 1e6``.
The estimates go into the records' token columns; a model without a price gets cost NaN.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from atlas_router.records.importers.common import (
    ImportFormatError, ImportResult, check_scores, domain_of, is_blank, split_from_name, with_query_ids,
)
from atlas_router.records.schema import SCHEMA_VERSION

CHARS_PER_TOKEN = 4
OUTPUT_TOKENS = 256


def estimate_input_tokens(text: str) -> int:
    """The documented estimate: one token per four characters, at least one."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _read_json_rows(path: Path, what: str) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ImportFormatError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"{path}: cannot read {what} file ({err})") from None
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as err:
        raise ImportFormatError(f"{path}: {what} file is not JSON or JSONL ({err})") from None


def read_scores(path: Path) -> list[dict[str, Any]]:
    rows = _read_json_rows(path, "scores")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "question" not in row or not isinstance(row.get("scores"), Mapping):
            raise ImportFormatError(f"{path}: entry {i} needs 'question' and a 'scores' object of model -> score")
    return rows


def read_queries(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """question text -> query row (the first one wins) and how many rows repeated a question."""
    by_text: dict[str, dict[str, Any]] = {}
    repeats = 0
    for i, row in enumerate(_read_json_rows(path, "queries")):
        if not isinstance(row, Mapping) or "query" not in row:
            raise ImportFormatError(f"{path}: row {i} needs 'query' (and task_name, ground_truth)")
        if row["query"] in by_text:
            repeats += 1
            continue
        by_text[row["query"]] = dict(row)
    return by_text, repeats


def read_prices(path: Path) -> dict[str, tuple[float, float]]:
    """model -> (input, output) price per million tokens."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImportFormatError(f"{path}: models file not found") from None
    except ValueError as err:
        raise ImportFormatError(f"{path}: models file is not JSON ({err})") from None
    if not isinstance(data, Mapping):
        raise ImportFormatError(f"{path}: expected an object of model -> {{input_price, output_price}}")
    prices = {}
    for name, info in data.items():
        if not isinstance(info, Mapping) or "input_price" not in info or "output_price" not in info:
            raise ImportFormatError(f"{path}: model '{name}' needs input_price and output_price")
        prices[str(name)] = (float(info["input_price"]), float(info["output_price"]))
    return prices


def _choices(raw: Any) -> list[str] | None:
    """LLMRouter stores choices as a Python literal: a list, or {"label": [...], "text": [...]}."""
    value = raw
    if isinstance(raw, str):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, Mapping) and isinstance(value.get("text"), list):
        return [str(t) for t in value["text"]]
    if isinstance(value, list):
        return [str(t) for t in value]
    return None


def _reference(q: Mapping[str, Any]) -> str:
    truth = q.get("ground_truth")
    truth_text = "" if truth is None else (truth if isinstance(truth, str) else json.dumps(truth))
    if q.get("metric") == "em_mc":
        choices = _choices(q.get("choices"))
        if choices:
            return json.dumps({"answer": truth_text, "choices": choices}, ensure_ascii=False)
    return truth_text


def read_llmrouter(scores: str | Path, queries: str | Path | None = None,
                   models: str | Path | None = None) -> ImportResult:
    """Records (tool "none") for every (question, model) score in an LLMRouter/RouterDC table."""
    scores_path = Path(scores)
    rows = read_scores(scores_path)
    by_text, repeats = read_queries(Path(queries)) if queries else ({}, 0)
    prices = read_prices(Path(models)) if models else {}
    file_bench, split = split_from_name(scores_path)
    file_bench = file_bench or scores_path.parent.name.lower() or "llmrouter"

    records: list[dict[str, Any]] = []
    model_names: dict[str, None] = {}
    blank = unmatched = 0
    for row in rows:
        question = str(row["question"])
        q = by_text.get(question)
        if queries and q is None:
            unmatched += 1
        benchmark = str(q.get("task_name") or file_bench) if q else file_bench
        in_tokens = estimate_input_tokens(question)
        for model, score in row["scores"].items():
            model_names[str(model)] = None
            if is_blank(score):
                blank += 1
                continue
            price = prices.get(str(model))
            cost = (in_tokens * price[0] + OUTPUT_TOKENS * price[1]) / 1e6 if price else math.nan
            records.append({
                "benchmark": benchmark, "split": split, "domain": domain_of(benchmark), "query": question,
                "reference": _reference(q) if q else "", "model": str(model), "tool": "none", "score": score,
                "cost": cost, "input_tokens": in_tokens, "output_tokens": OUTPUT_TOKENS, "calls": 1,
                "source": "llmrouter", "schema_version": SCHEMA_VERSION,
            })
    df = pd.DataFrame.from_records(records, columns=None if records else ["benchmark", "query", "model"])
    if not df.empty:
        df["score"] = check_scores(df["score"], str(scores_path))
        df = with_query_ids(df)
    notes = []
    if queries:
        notes.append(f"questions without a row in the queries file: {unmatched}")
        if repeats:
            notes.append(f"queries file rows repeating an earlier question (first one used): {repeats}")
    if models:
        unpriced = sorted(m for m in model_names if m not in prices)
        if unpriced:
            notes.append(f"models without a price (cost NaN): {', '.join(unpriced)}")
    files = [str(p) for p in (scores, queries, models) if p]
    return ImportResult("llmrouter", files, df, queries=len(rows), models=list(model_names),
                        skipped_blank=blank, notes=notes)
