"""Per-pair summaries of records: the table printed after a collection run."""

from __future__ import annotations

from typing import Any

import pandas as pd


def pair_table(records: pd.DataFrame, benchmark: str | None = None) -> list[dict[str, Any]]:
    """Accuracy, mean cost, mean latency and errors per (model, tool), best accuracy first."""
    df = records if benchmark is None else records[records["benchmark"] == benchmark]
    if df.empty:
        return []
    g = df.assign(failed=df["error"].fillna("") != "").groupby(["model", "tool"], sort=False)
    out = pd.DataFrame({
        "n": g.size(), "accuracy": g["score"].mean(), "cost": g["cost"].mean(),
        "latency_s": g["latency_s"].mean(), "errors": g["failed"].sum(),
    }).reset_index().sort_values(["accuracy", "cost"], ascending=[False, True])
    return [
        {"pair": f"{r.model}@@{r.tool}", "model": r.model, "tool": r.tool, "n": int(r.n), "accuracy": float(r.accuracy),
         "cost": float(r.cost), "latency_s": float(r.latency_s), "errors": int(r.errors)}
        for r in out.itertuples()
    ]
