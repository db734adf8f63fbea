"""Records as a query x pair matrix: what every router fits on.

Records have one row per (query_id, model, tool). Routers need, per query, the score and cost of every
pair, so this pivots them into dense arrays with NaN where a pair has no record (or no grade) for a
query. Pairs are sorted (model, tool) tuples so that the same records give the same column order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from atlas_router.errors import AtlasError

Pair = tuple[str, str]
REQUIRED = ("query_id", "model", "tool", "score")


def pair_label(pair: Pair) -> str:
    """``model`` for model-only pairs, else ``model+tool``: how pairs are named in tables and reports."""
    model, tool = pair
    return model if tool in ("", "none") else f"{model}+{tool}"


@dataclass
class QueryTable:
    """Dense view of records: rows are queries, columns are (model, tool) pairs."""

    query_ids: list[str]
    queries: list[str]
    benchmarks: np.ndarray  # (Q,) object: benchmark name per query ("" when unknown)
    pairs: list[Pair]
    scores: np.ndarray  # (Q, P) float64, NaN: no graded record
    costs: np.ndarray  # (Q, P) float64, NaN: no record or no cost
    input_tokens: np.ndarray  # (Q, P) float64, NaN: no record
    output_tokens: np.ndarray  # (Q, P) float64
    calls: np.ndarray  # (Q, P) float64, model calls per record (NaN: no record)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    def pair_index(self) -> dict[Pair, int]:
        return {p: i for i, p in enumerate(self.pairs)}

    def subset(self, rows: np.ndarray) -> "QueryTable":
        """The same pairs for a subset of queries (by row index or mask)."""
        idx = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=int)
        return QueryTable(
            [self.query_ids[i] for i in idx], [self.queries[i] for i in idx], self.benchmarks[idx], list(self.pairs),
            self.scores[idx], self.costs[idx], self.input_tokens[idx], self.output_tokens[idx], self.calls[idx],
        )

    def pooled_accuracy(self) -> np.ndarray:
        """Mean score per pair over all queries that have one (NaN for a pair never graded)."""
        return _nanmean(self.scores)

    def pooled_cost(self) -> np.ndarray:
        """Mean cost per pair (0 for a pair with no costed record)."""
        return np.nan_to_num(_nanmean(self.costs), nan=0.0)


def _nanmean(x: np.ndarray) -> np.ndarray:
    n = np.sum(~np.isnan(x), axis=0)
    s = np.nansum(x, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def check_records(records: pd.DataFrame, what: str = "records") -> None:
    """Raise a one-line AtlasError when records cannot be routed on."""
    if not isinstance(records, pd.DataFrame):
        raise AtlasError(f"{what} must be a pandas DataFrame with the record columns, got {type(records).__name__}")
    missing = [c for c in REQUIRED if c not in records.columns]
    if missing:
        raise AtlasError(f"{what} lack column(s): {', '.join(missing)}")
    if records.empty:
        raise AtlasError(f"{what} are empty: nothing to fit or evaluate on")


def query_table(records: pd.DataFrame, pairs: list[Pair] | None = None) -> QueryTable:
    """Pivot records into a QueryTable. ``pairs`` fixes the columns (pairs absent from records stay NaN)."""
    check_records(records)
    df = records
    qid = df["query_id"].astype(str).to_numpy()
    q_codes, q_uniques = pd.factorize(qid, sort=False)
    models = df["model"].astype(str).to_numpy()
    tools = df["tool"].astype(str).fillna("none").to_numpy() if "tool" in df else np.full(len(df), "none")
    keys = pd.Series(list(zip(models, tools)))
    if pairs is None:
        pairs = sorted(set(keys))
    index = {p: i for i, p in enumerate(pairs)}
    p_codes = keys.map(index).to_numpy()
    keep = ~pd.isna(p_codes)
    p_codes = np.where(keep, p_codes, 0).astype(int)
    shape = (len(q_uniques), len(pairs))

    def grid(col: str) -> np.ndarray:
        out = np.full(shape, np.nan)
        if col in df.columns:
            vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            out[q_codes[keep], p_codes[keep]] = vals[keep]
        return out

    scores = grid("score")
    if np.nanmin(scores, initial=0.0) < 0 or np.nanmax(scores, initial=0.0) > 1:
        raise AtlasError("record scores must lie in [0, 1]")
    calls = grid("calls")
    if "calls" not in df.columns:
        calls = np.where(np.isnan(scores), np.nan, 1.0)
    first = pd.DataFrame({"q": q_codes}).drop_duplicates("q").index.to_numpy()
    queries = df["query"].astype(str).to_numpy()[first] if "query" in df else np.array(list(q_uniques))
    bench = df["benchmark"].astype(str).fillna("").to_numpy()[first] if "benchmark" in df else np.full(len(first), "")
    return QueryTable(
        [str(q) for q in q_uniques], [str(q) for q in queries], np.asarray(bench, dtype=object), list(pairs),
        scores, grid("cost"), grid("input_tokens"), grid("output_tokens"), calls,
    )


def records_hash(records: pd.DataFrame) -> str:
    """Hash of what a router learns from (keys, scores, costs), independent of row order."""
    cols = [c for c in ("query_id", "model", "tool", "score", "cost") if c in records.columns]
    frame = records[cols].map(str).sort_values(cols[:3]).to_numpy()  # map: pandas 3 astype(str) keeps NaN
    h = hashlib.sha256()
    for row in frame:
        h.update("\x1f".join(row).encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]
