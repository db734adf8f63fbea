"""Import RouteLLM response tables (lm-sys/RouteLLM ``routellm/evals/*/..._responses.csv``, MMLU per-domain CSVs).

Layout: ``prompt``, one True/False correctness column per model, and optionally ``MODEL_response``
with the model's full reply; index columns ("Unnamed: 0") and text columns are ignored with a note. Every (prompt, model) with a value becomes a record (tool "none", score
1.0 or 0.0, the response when present); blank cells are skipped and counted. The benchmark is the file
name without ``_responses`` (``gsm8k_responses.csv`` -> ``gsm8k``) unless one is given. No costs are
published with these tables, so cost is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from atlas_router.records.importers.common import (
    ImportFormatError, ImportResult, check_scores, domain_of, is_blank, read_files, score_columns, with_query_ids,
)
from atlas_router.records.schema import SCHEMA_VERSION

RESPONSE_SUFFIX = "_response"


def benchmark_from_name(path: Path) -> str:
    stem = path.name
    for suffix in (".gz", ".csv"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    for suffix in ("_responses", "-responses", "_response"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return stem.lower() or "routellm"


def read_one(path: Path, benchmark: str | None = None) -> tuple[pd.DataFrame, int, list[str], int, list[str]]:
    """(records, prompts, models, blank cells, notes) of one RouteLLM CSV."""
    if not path.is_file():
        raise ImportFormatError(f"{path}: RouteLLM file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # CSV parsing errors of every kind mean "not this format"
        raise ImportFormatError(f"{path}: cannot read CSV ({type(err).__name__}: {err})") from None
    if "prompt" not in df.columns:
        raise ImportFormatError(f"{path}: no 'prompt' column (columns: {', '.join(df.columns[:6])})")
    models, ignored = score_columns(df, [c for c in df.columns if c != "prompt" and not c.endswith(RESPONSE_SUFFIX)])
    if not models:
        raise ImportFormatError(f"{path}: no per-model correctness columns besides 'prompt'"
                                + "".join(f"; {n}" for n in ignored))
    notes = [f"{path}: {n}" for n in ignored]
    bench = benchmark or benchmark_from_name(path)
    parts, blank = [], 0
    for model in models:
        empty = df[model].map(is_blank)
        blank += int(empty.sum())
        keep = ~empty
        part = pd.DataFrame({
            "query": df.loc[keep, "prompt"].values, "model": model,
            "score": check_scores(df.loc[keep, model], f"{path}: column '{model}'").values,
        })
        response_col = f"{model}{RESPONSE_SUFFIX}"
        if response_col in df.columns:
            part["response"] = df.loc[keep, response_col].values
        parts.append(part)
    records = pd.concat(parts, ignore_index=True)
    records["benchmark"] = bench
    records["domain"] = domain_of(bench)
    records["tool"] = "none"
    records["calls"] = 1
    records["source"] = "routellm"
    records["schema_version"] = SCHEMA_VERSION
    return with_query_ids(records), len(df), models, blank, notes


def read_routellm(paths: Sequence[str | Path], benchmark: str | None = None) -> ImportResult:
    """Records from one or more RouteLLM CSV files (their counts add up)."""
    return read_files("routellm", paths, lambda p: read_one(p, benchmark),
                      "records repeating an earlier (prompt, model)")
