"""Import RouterBench tables (withmartian/routerbench ``routerbench_0shot.pkl`` / ``routerbench_5shot.pkl``,
or the same table as CSV or Parquet).

Layout: one row per prompt with ``sample_id``, ``prompt``, ``eval_name``, one score column per model,
``MODEL|model_response``, ``MODEL|total_cost`` and ``oracle_model_to_route_to``. Every (prompt, model)
with a score becomes a record (tool "none") with that model's response and total cost; a blank score
cell is skipped and counted. The benchmark is ``eval_name``. Columns pandas adds for an index
("Unnamed: 0") and text columns are ignored with a note.

Pickle files can run code when loaded, so a ``.pkl`` table is read only with ``trust_pickle=True``
(``--trust-pickle``); convert it once to Parquet or CSV to share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from atlas_router.records.importers.common import (
    ImportFormatError, ImportResult, check_scores, domain_of, is_blank, read_files, score_columns, split_from_name,
    with_query_ids,
)
from atlas_router.records.schema import SCHEMA_VERSION

FIXED_COLUMNS = ("sample_id", "prompt", "eval_name", "oracle_model_to_route_to")


def read_table(path: Path, trust_pickle: bool = False) -> pd.DataFrame:
    """A RouterBench table from .csv, .parquet or, when trusted, .pkl/.pickle (a pandas DataFrame)."""
    if not path.is_file():
        raise ImportFormatError(f"{path}: RouterBench file not found")
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle") and not trust_pickle:
        raise ImportFormatError(f"{path}: a pickle can run code when loaded; import it only if you trust its source "
                                "(--trust-pickle), or convert it to .parquet/.csv first")
    try:
        if suffix in (".pkl", ".pickle"):
            df = pd.read_pickle(path)
        elif suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            raise ImportFormatError(f"{path}: expected a .csv, .parquet or .pkl RouterBench table, got '{suffix}'")
    except ImportFormatError:
        raise
    except Exception as err:  # unpickling and CSV parsing fail in many ways; all mean "not this format"
        raise ImportFormatError(f"{path}: cannot read the table ({type(err).__name__}: {err})") from None
    if not isinstance(df, pd.DataFrame):
        raise ImportFormatError(f"{path}: the pickle holds a {type(df).__name__}, not a pandas DataFrame")
    if "prompt" not in df.columns:
        raise ImportFormatError(f"{path}: no 'prompt' column (columns: {', '.join(map(str, df.columns[:8]))} ...)")
    return df


def model_columns(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(score columns, notes): columns that are neither fixed nor ``MODEL|...``, less index and text columns."""
    return score_columns(df, [c for c in df.columns if c not in FIXED_COLUMNS and "|" not in str(c)])


def _prompt_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value)
    return "" if is_blank(value) else str(value)


def read_one(path: Path, trust_pickle: bool = False) -> tuple[pd.DataFrame, int, list[str], int, list[str]]:
    """(records, prompts, models, blank cells, notes) of one table."""
    df = read_table(path, trust_pickle)
    models, ignored = model_columns(df)
    if not models:
        raise ImportFormatError(f"{path}: no model score columns besides {', '.join(FIXED_COLUMNS)}"
                                + "".join(f"; {n}" for n in ignored))
    notes = [f"{path}: {n}" for n in ignored]
    fallback_bench = split_from_name(path)[0] or "routerbench"
    benchmark = (df["eval_name"].map(lambda v: fallback_bench if is_blank(v) else str(v))
                 if "eval_name" in df.columns else pd.Series(fallback_bench, index=df.index))
    prompts = df["prompt"].map(_prompt_text)
    parts = []
    blank = 0
    for model in models:
        scores = df[model]
        empty = scores.map(is_blank)
        blank += int(empty.sum())
        keep = ~empty
        response_col, cost_col = f"{model}|model_response", f"{model}|total_cost"
        part = pd.DataFrame({
            "benchmark": benchmark[keep].values, "query": prompts[keep].values, "model": str(model),
            "score": check_scores(scores[keep], f"{path}: column '{model}'").values,
        })
        if response_col in df.columns:
            part["response"] = df.loc[keep, response_col].map(lambda v: "" if is_blank(v) else str(v)).values
        if cost_col in df.columns:
            part["cost"] = pd.to_numeric(df.loc[keep, cost_col], errors="coerce").values
        parts.append(part)
    records = pd.concat(parts, ignore_index=True)
    records["tool"] = "none"
    records["calls"] = 1
    records["source"] = "routerbench"
    records["schema_version"] = SCHEMA_VERSION
    domains = {b: domain_of(b) for b in records["benchmark"].unique()}
    records["domain"] = records["benchmark"].map(domains)
    return with_query_ids(records), len(df), [str(m) for m in models], blank, notes


def read_routerbench(paths: Sequence[str | Path], trust_pickle: bool = False) -> ImportResult:
    """Records from one or more RouterBench tables (their counts add up); pickles only when trusted."""
    return read_files("routerbench", paths, lambda p: read_one(p, trust_pickle),
                      "records repeating an earlier (prompt, model) of the same eval")
