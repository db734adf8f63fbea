"""The Python API in five calls: ``fit``, ``route``, ``answer``, ``save``, ``load`` (docs/api.md shows each).

Thin on purpose: each call is the command line's own code path (``atlas fit``, ``atlas route``,
``atlas ask``), so a script and the CLI give the same results. Records are a pandas DataFrame in the
record schema (``records.schema``) or a record store directory.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pandas as pd

from atlas_router.errors import AtlasError
from atlas_router.execution.record import PairRecord
from atlas_router.pool.pool import Pool
from atlas_router.routers.base import Decision, Router, make_router
from atlas_router.routers.persist import load_router, save_router
from atlas_router.routers.encoders import Encoder, build_encoder

ALIASES = {"cluster": "atlas-cluster"}


def read_records(records: pd.DataFrame | str | os.PathLike[str]) -> pd.DataFrame:
    """Records from a DataFrame (checked against the schema) or a record store directory."""
    from atlas_router.records.store import RecordStore, normalize

    if isinstance(records, pd.DataFrame):
        return normalize(records)
    path = Path(records).expanduser()
    if not path.is_dir():
        raise AtlasError(f"records directory not found: {path}")
    return RecordStore(path).load()


def fit(records: pd.DataFrame | str | os.PathLike[str], router: str = "atlas-cluster",
        encoder: Encoder | str | None = None, **settings: Any) -> Router:
    """A router (registry name, e.g. atlas-cluster, knn, best-single) fitted on ``records`` (gateway records
    with their feedback applied: ``atlas_router.records.feedback``).

    ``encoder`` is an Encoder or a spec (``hashing``, ``sentence-transformers``, ``openai:MODEL@URL``);
    ``settings`` go to the router (alpha, k, seed, ...)."""
    from atlas_router.records.feedback import training_records

    r = make_router(ALIASES.get(router, router), **settings)
    df, _notes = training_records(read_records(records))  # gateway answers scored by their feedback, as atlas fit
    if df.empty:
        raise AtlasError("no records to fit on")
    enc = encoder if isinstance(encoder, Encoder) or encoder is None else build_encoder(encoder)
    return r.fit(df, enc if r.uses_encoder else None)


def route(router: Router | str | os.PathLike[str], question: str, alpha: float | None = None) -> Decision:
    """The (model, tool) pair ``router`` (fitted, or a router file) picks for ``question``, with its reasons."""
    r = router if isinstance(router, Router) else load(router)
    return r.route([question], alpha=alpha)[0]


async def answer_async(question: str, router: Router | str | os.PathLike[str] | None = None,
                       pool: Pool | str | os.PathLike[str] | None = None, alpha: float | None = None,
                       model: str | None = None, tool: str = "none") -> PairRecord:
    """Answer ``question`` by the path ``atlas ask`` and the gateway take (``serve.answering``): routed by
    ``router`` at ``alpha`` (else the default operating point), the router's ranking tried in order with
    fallback; or exactly the pair ``model``/``tool``. The record says what happened (``answer``,
    ``response``, ``cost``, ``error``: the last pair's cause when none answered)."""
    from atlas_router.serve.answering import ask

    the_pool = pool if isinstance(pool, Pool) else Pool.load(pool)
    if router is not None and model is not None:
        raise AtlasError("give a router or a model, not both")
    fitted = None if router is None else router if isinstance(router, Router) else load(router)
    pair = None if fitted is not None else (model or the_pool.config.models[0].name, tool)
    return (await ask(the_pool, question, router=fitted, pair=pair, alpha=alpha)).record


def answer(question: str, router: Router | str | os.PathLike[str] | None = None,
           pool: Pool | str | os.PathLike[str] | None = None, alpha: float | None = None,
           model: str | None = None, tool: str = "none") -> PairRecord:
    """``answer_async`` from synchronous code (not from inside a running event loop)."""
    return asyncio.run(answer_async(question, router, pool, alpha, model, tool))


def save(router: Router, path: str | os.PathLike[str]) -> Path:
    """Write a fitted router and its manifest to one file."""
    return save_router(router, path)


def load(path: str | os.PathLike[str], encoder: Encoder | None = None) -> Router:
    """A router written by ``save`` or ``atlas fit``."""
    return load_router(path, encoder)


__all__ = ["answer", "answer_async", "fit", "load", "read_records", "route", "save"]
