"""How far a label-free grader can be trusted: regrade gold-graded records with it and compare.

Three measures, on records that hold every pair's reply and its gold score:

* label agreement: the grader's score thresholded at 0.5 against the gold label (accuracy, Cohen's kappa,
  ROC AUC of the raw score), next to the majority-class rate so that a grader that always says "correct"
  is seen for what it is; ``coverage`` is the share of replies it gave a verdict on at all;
* preference agreement: over every two pairs of a query whose gold labels differ, the share the grader
  orders the same way (a tie counts one half) - the quantity a router actually consumes;
* routing: a router fitted on the grader's records and one fitted on the gold records of the same train
  queries, both replayed on the gold records of the same held-out queries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from atlas_router.data.graders.judge import LabelFreeGrader, grade_all
from atlas_router.errors import AtlasError

Pair = tuple[str, str]


def sample_queries(records: pd.DataFrame, limit: int | None, seed: int = 0) -> pd.DataFrame:
    """The records of ``limit`` queries drawn at random (seeded), or all of them."""
    if limit is None:
        return records.reset_index(drop=True)
    ids = np.array(sorted(records["query_id"].astype(str).unique()))
    if limit < len(ids):
        ids = np.random.default_rng(seed).choice(ids, size=limit, replace=False)
    return records[records["query_id"].astype(str).isin(set(ids))].reset_index(drop=True)


def judge_records(records: pd.DataFrame, grader: LabelFreeGrader, concurrency: int = 2,
                  on_done: Callable[[], None] | None = None) -> pd.DataFrame:
    """A copy of ``records`` (in the record schema) whose scores come from ``grader`` (``grader`` says so)."""
    from atlas_router.records.store import normalize

    records = normalize(records)
    if "response" not in records.columns or not records["response"].astype(str).str.strip().any():
        raise AtlasError("these records hold no replies (response column), so there is nothing to grade")
    groups = list(records.groupby("query_id", sort=True))
    items = []
    for _qid, g in groups:
        replies = {(str(r.model), str(r.tool)): ("" if str(r.error or "") else str(r.response or ""))
                   for r in g.itertuples()}
        items.append((str(g["query"].iloc[0]), replies))
    grades = grade_all(grader, items, concurrency=concurrency, on_done=on_done)
    by_key = {(str(qid), m, t): gr for (qid, _g), graded in zip(groups, grades) for (m, t), gr in graded.items()}
    out = records.copy()
    keys = zip(out["query_id"].astype(str), out["model"].astype(str), out["tool"].astype(str))
    chosen = [by_key[k] for k in keys]
    out["score"] = [g.score for g in chosen]
    out["grader"] = [g.grader for g in chosen]
    return out.reset_index(drop=True)


def _aligned(gold: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    key = ["query_id", "model", "tool"]
    merged = gold[[*key, "score"]].merge(judged[[*key, "score"]], on=key, suffixes=("_gold", "_judge"))
    if merged.empty:
        raise AtlasError("the gold and judged records share no (query, model, tool)")
    return merged


def label_agreement(gold: pd.DataFrame, judged: pd.DataFrame) -> dict[str, Any]:
    """Thresholded agreement of judged scores with gold labels; see the module doc."""
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    m = _aligned(gold, judged)
    covered = m[m["score_judge"].notna() & m["score_gold"].notna()]
    out: dict[str, Any] = {"n": int(len(m)), "covered": int(len(covered)),
                           "coverage": float(len(covered) / len(m))}
    if covered.empty:
        return {**out, "distinct_judge_scores": 0, "accuracy": math.nan, "kappa": math.nan, "auc": math.nan, "majority_rate": math.nan,
                "gold_positive_rate": math.nan, "judge_positive_rate": math.nan}
    y = (covered["score_gold"].to_numpy() >= 0.5).astype(int)
    p = (covered["score_judge"].to_numpy() >= 0.5).astype(int)
    both = len(set(y)) == 2
    kappa = float(cohen_kappa_score(y, p)) if both or len(set(p)) == 2 else math.nan
    return {**out,
            "distinct_judge_scores": int(covered["score_judge"].nunique()),
            "accuracy": float((y == p).mean()),
            "kappa": kappa,
            "auc": float(roc_auc_score(y, covered["score_judge"].to_numpy())) if both else math.nan,
            "majority_rate": float(max(y.mean(), 1 - y.mean())),
            "gold_positive_rate": float(y.mean()),
            "judge_positive_rate": float(p.mean())}


def preference_agreement(gold: pd.DataFrame, judged: pd.DataFrame) -> dict[str, Any]:
    """Share of gold-separated reply pairs of a query that the judged scores order the same way."""
    m = _aligned(gold, judged)
    hits: list[float] = []
    undecided = 0
    for _qid, g in m.groupby("query_id"):
        rows = list(g[["score_gold", "score_judge"]].itertuples(index=False))
        for a, b in combinations(rows, 2):
            if math.isnan(a[0]) or math.isnan(b[0]) or a[0] == b[0]:
                continue
            if math.isnan(a[1]) or math.isnan(b[1]):
                undecided += 1
                continue
            want = np.sign(a[0] - b[0])
            got = np.sign(a[1] - b[1])
            hits.append(0.5 if got == 0 else float(got == want))
    return {"pairs": len(hits) + undecided, "decided": len(hits),
            "agreement": float(np.mean(hits)) if hits else math.nan}


def compare_routers(gold: pd.DataFrame, judged: pd.DataFrame, routers: Sequence[str] = ("atlas-cluster", "best-single"),
                    test_size: float = 0.3, seed: int = 0, alpha: float = 0.5, encoder: Any = None,
                    k: int = 8) -> dict[str, Any]:
    """Routers fitted on judged vs gold train records, both replayed on the same gold test records."""
    from atlas_router.eval.run import run_evaluation
    from atlas_router.eval.split import split_records
    from atlas_router.records.store import normalize

    gold, judged = normalize(gold), normalize(judged)
    gold_train, gold_test = split_records(gold, test_size=test_size, seed=seed)
    train_ids = set(gold_train["query_id"].astype(str))
    judged_train = judged[judged["query_id"].astype(str).isin(train_ids)].reset_index(drop=True)
    out: dict[str, Any] = {"train_queries": len(train_ids), "test_queries": int(gold_test["query_id"].nunique()),
                           "routers": {}}
    for label, train in (("gold", gold_train), ("judge", judged_train)):
        if not train["score"].notna().any():  # a grader that gave no verdict at all: nothing to fit on
            for name in routers:
                out["routers"].setdefault(name, {})[label] = {"accuracy": math.nan, "cost": math.nan, "choices": {},
                                                               "error": "no graded train records"}
            continue
        ev = run_evaluation(train, gold_test, list(routers), alpha=alpha, encoder=encoder, seed=seed, k=k, alphas=[])
        for name, result in ev.results.items():
            out["routers"].setdefault(name, {})[label] = {
                "accuracy": result.overall.accuracy, "cost": result.overall.cost,
                "choices": dict(result.choices)}
    return out
