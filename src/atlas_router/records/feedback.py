"""Gateway records and feedback as training records: the rule ``atlas fit`` applies before fitting.

The gateway writes one record per answered request (``source = "gateway"``, ``query_id`` = the chat
completion id, ``score`` NaN until graded) and one per ``POST /v1/feedback`` (``source = "feedback"``,
``query_id`` = ``<completion id>/feedback/<nanoseconds>``, same model, tool, query and cost as the
answer, ``score`` = the user's score, ``grader`` = ``feedback:<key id>``).

Rule (``training_records``): a feedback score replaces the grade of the (response, pair) it names,
whatever graded it before (a judge, a reward model): a user's explicit verdict on the answer they got
is the most direct evidence there is. Several feedbacks on one response: the latest counts (a user can
correct a click). Feedback whose gateway record is missing (written after a crash lost the answer's
record) stands as the record itself. Gateway and feedback rows without prompt text (``prompts: off`` or
``hashed``) or still ungraded cannot teach a router and are left out, with a note saying how many.
Records of every other source pass unchanged.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from atlas_router.records.schema import KEY, query_key

GATEWAY_SOURCE = "gateway"
FEEDBACK_SOURCE = "feedback"
FEEDBACK_SEP = "/feedback/"
HASH_PREFIX = "hmac-sha256:"


def feedback_query_id(response_id: str, stamp_ns: int | None = None) -> str:
    """The query id of one feedback on ``response_id``: unique, and ordered by time within the response."""
    return f"{response_id}{FEEDBACK_SEP}{time.time_ns() if stamp_ns is None else int(stamp_ns):020d}"


def feedback_target(query_id: str) -> tuple[str, int]:
    """(response id, time stamp) of a feedback query id."""
    target, _, stamp = str(query_id).rpartition(FEEDBACK_SEP)
    return (target, int(stamp)) if target and stamp.isdigit() else (str(query_id), 0)


def has_text(queries: pd.Series) -> np.ndarray:
    """Rows whose query is real prompt text (not blank, not a salted hash)."""
    q = queries.astype(str)
    return (q.str.strip() != "").to_numpy(bool) & ~q.str.startswith(HASH_PREFIX).to_numpy(bool)


def training_records(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Records with feedback applied to the gateway's records (see the module rule), and notes."""
    if "source" not in df.columns:
        return df, []
    source = df["source"].astype(str)
    is_fb = (source == FEEDBACK_SOURCE).to_numpy(bool)
    is_gw = (source == GATEWAY_SOURCE).to_numpy(bool)
    if not (is_fb.any() or is_gw.any()):
        return df, []
    notes: list[str] = []
    rest = df[~is_fb].copy()
    fb = df[is_fb].copy()
    applied = 0
    if len(fb):
        parsed = [feedback_target(q) for q in fb["query_id"].astype(str)]
        fb["query_id"] = [t for t, _ in parsed]
        fb["_stamp"] = [s for _, s in parsed]
        latest = fb.sort_values("_stamp", kind="stable").drop_duplicates(["query_id", "model", "tool"], keep="last")
        latest = latest.drop(columns="_stamp").set_index(["query_id", "model", "tool"])
        key = pd.MultiIndex.from_frame(rest[["query_id", "model", "tool"]].astype(str))
        hit = key.isin(latest.index)
        if hit.any():
            found = latest.loc[key[hit]]
            rest.loc[hit, "score"] = found["score"].to_numpy(float)
            rest.loc[hit, "grader"] = found["grader"].astype(str).to_numpy()
            applied = int(hit.sum())
        orphans = latest[~latest.index.isin(key)].reset_index()
        if len(orphans):
            orphans["source"] = GATEWAY_SOURCE
            rest = pd.concat([rest, orphans[rest.columns]], ignore_index=True)
        notes.append(f"{len(fb)} feedback records: {applied} gateway answers scored by their latest feedback"
                     + (f", {len(orphans)} without their gateway record used as records" if len(orphans) else ""))
    gw = (rest["source"].astype(str) == GATEWAY_SOURCE).to_numpy(bool)
    textless = gw & ~has_text(rest["query"])
    ungraded = gw & ~textless & pd.to_numeric(rest["score"], errors="coerce").isna().to_numpy(bool)
    if textless.any():
        notes.append(f"{int(textless.sum())} gateway records left out: no prompt text (served with prompts off or "
                     "hashed; use records.prompts: full to refit from gateway traffic)")
    if ungraded.any():
        notes.append(f"{int(ungraded.sum())} gateway records left out: no feedback or grade yet")
    out = rest[~(textless | ungraded)].reset_index(drop=True)
    return _by_prompt(out, notes), notes


def _by_prompt(df: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Gateway answers keyed by their prompt (``query_key``) instead of their response id, so answers of
    several pairs to one prompt compare like a collected query's; repeats of a (prompt, pair) average."""
    gw = (df["source"].astype(str) == GATEWAY_SOURCE).to_numpy(bool)
    if not gw.any():
        return df
    rows = df[gw].copy()
    rows["query_id"] = [query_key(b, q) for b, q in zip(rows["benchmark"].astype(str), rows["query"].astype(str))]
    mean_cols = [c for c in ("score", "cost", "latency_s", "input_tokens", "output_tokens") if c in rows.columns]
    first = {c: "first" for c in rows.columns if c not in mean_cols and c not in KEY}
    merged = rows.groupby(list(KEY), sort=False, as_index=False).agg({**first, **{c: "mean" for c in mean_cols}})
    for c in ("input_tokens", "output_tokens"):
        if c in merged.columns:
            merged[c] = merged[c].round().astype("int64")
    notes.append(f"{len(rows)} gateway answers as {merged['query_id'].nunique()} prompts "
                 f"({len(merged)} prompt-pair records)")
    return pd.concat([df[~gw], merged[df.columns]], ignore_index=True)
