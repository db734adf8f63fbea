"""Train/test split of records by query (never by row), seeded and stratified by benchmark.

All records of one query land on the same side, so a router is never tested on a query it saw.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atlas_router.errors import AtlasError


def split_records(records: pd.DataFrame, test_size: float = 0.3, seed: int = 0,
                  stratify: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) records; ``test_size`` is the fraction of queries held out (per benchmark)."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise AtlasError(f"test_size must lie in (0, 1), got {test_size}")
    if "query_id" not in records.columns or records.empty:
        raise AtlasError("records to split need rows and a 'query_id' column")
    queries = records.drop_duplicates("query_id")
    ids = queries["query_id"].astype(str).to_numpy()
    if len(ids) < 2:
        raise AtlasError("need at least two queries to split records into train and test")
    labels = None
    if stratify and "benchmark" in queries.columns:
        bench = queries["benchmark"].astype(str).fillna("").to_numpy()
        names, counts = np.unique(bench, return_counts=True)
        rare = set(names[counts < 2])
        labels = np.array(["\x00rare" if b in rare else b for b in bench], dtype=object)
        if len(set(labels)) < 2 or min(np.unique(labels, return_counts=True)[1]) < 2:
            labels = None
    try:
        train_ids, test_ids = train_test_split(ids, test_size=test_size, random_state=seed, stratify=labels)
    except ValueError:  # too few queries per benchmark for the requested fraction
        train_ids, test_ids = train_test_split(ids, test_size=test_size, random_state=seed)
    in_test = records["query_id"].astype(str).isin(set(test_ids))
    return records[~in_test].reset_index(drop=True), records[in_test].reset_index(drop=True)
