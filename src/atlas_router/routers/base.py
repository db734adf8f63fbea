"""The router interface, scikit-learn style, and the registry of routers by name.

* the constructor only stores settings (``get_params`` lists them);
* ``fit(records, encoder)`` learns state into attributes ending in ``_`` and returns ``self``;
* ``route(queries)`` reads that state only and returns one ``Decision`` per query, its ``ranking`` the
  router's pairs best first (what a caller falls back along): a fitted router is safe to share between
  threads;
* a router that adds to another router's state (accuracy lower bounds, online feedback) is a
  ``WrappedRouter``: a Router whose ``fit`` fits the router it wraps;
* ``save(path)`` / ``load_router(path)`` keep a router in one file with a manifest saying what it was
  fitted on: data hash, encoder, settings (K, seed, ...) and library versions.

A router file is data only (JSON and arrays in a zip, see ``routers.persist``): loading one runs no code
from it, so keep fitted state in ``*_`` attributes holding numpy arrays, JSON values, torch tensors or
scikit-learn estimators.
"""

from __future__ import annotations

import inspect
import platform
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from atlas_router.core.lazy import import_object
from atlas_router.errors import AtlasError
from atlas_router.routers.encoders import Encoder, build_encoder
from atlas_router.routers.table import Pair, QueryTable, query_table, records_hash
from atlas_router.routers.utility import check_alpha, cost_scale


Queries = list[str] | np.ndarray


@dataclass
class Decision:
    """Where a query goes and why: ``utility`` under the router's alpha, ``explanation`` for humans and logs,
    ``ranking`` the router's pairs in order of preference (the fallbacks after the chosen pair)."""

    model: str
    tool: str
    utility: float
    explanation: dict[str, Any] = field(default_factory=dict)
    ranking: list[Pair] = field(default_factory=list)

    @property
    def pair(self) -> Pair:
        return (self.model, self.tool)

    def ranked(self) -> list[Pair]:
        """The pairs to try in order: the chosen one, then the rest of the ranking."""
        return [self.pair, *(p for p in self.ranking if p != self.pair)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LazyDecision(Decision):
    """A Decision whose explanation is written on first read. Why: a batch's decisions are arrays work,
    but writing every explanation is Python per query, and most readers of a batch (replay evaluation,
    ``route_indices``-like callers) never look at them; the gateway and the CLI read them and pay then."""

    def __init__(self, model: str, tool: str, utility: float, ranking: list[Pair],
                 explain: Callable[[], dict[str, Any]]) -> None:
        self.model, self.tool, self.utility, self.ranking = model, tool, utility, ranking
        self._explain: Callable[[], dict[str, Any]] | None = explain
        self._explanation: dict[str, Any] = {}

    @property  # type: ignore[override]
    def explanation(self) -> dict[str, Any]:
        if self._explain is not None:
            self._explanation, self._explain = self._explain(), None
        return self._explanation

    @explanation.setter
    def explanation(self, value: dict[str, Any]) -> None:
        self._explanation, self._explain = value, None


class Router(ABC):
    """Base of every router. Subclasses implement ``_fit`` and ``_route``."""

    #: registry name (atlas-cluster, knn, ...)
    name: ClassVar[str] = ""
    #: route() needs query texts, not embeddings (fine-tuned encoders, LLM routers, oracle)
    needs_text: ClassVar[bool] = False
    #: fit() embeds queries with the given encoder
    uses_encoder: ClassVar[bool] = True
    #: the router estimates each pair's accuracy per query, so it can route at an operating point such
    #: as "cheapest pair within 2 points of the best" (``routers.operating_point.route_at``)
    estimates_accuracy: ClassVar[bool] = False

    def __init__(self, alpha: float = 0.5, seed: int = 0) -> None:
        self.alpha = alpha
        self.seed = seed

    # -- settings ---------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Constructor settings by name (what a manifest records and ``clone`` reuses)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def set_params(self, **params: Any) -> "Router":
        known = self.get_params()
        for k, v in params.items():
            if k not in known:
                raise AtlasError(f"router '{self.name}' has no setting '{k}' (settings: {', '.join(known)})")
            setattr(self, k, v)
        return self

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "pairs_")

    # -- fitting ----------------------------------------------------------------------------------
    def fit(self, records: pd.DataFrame, encoder: Encoder | None = None) -> "Router":
        """Learn from records (one row per query x pair); ``encoder`` embeds their queries."""
        check_alpha(self.alpha)
        table = query_table(records)
        table = table.subset(np.argsort(np.asarray(table.query_ids), kind="stable"))  # row order must not matter
        if self.uses_encoder:
            encoder = encoder or build_encoder(None)
            self.encoder_spec_ = encoder.spec
            self.encoder_name_ = encoder.name
            self._encoder = encoder
        self.pairs_ = list(table.pairs)
        self.pair_accuracy_ = table.pooled_accuracy()
        self.pair_cost_ = table.pooled_cost()
        self.cost_scale_ = cost_scale(self.pair_cost_)
        self.data_hash_ = records_hash(records)
        self.n_queries_ = table.n_queries
        self.n_records_ = int(len(records))
        self._fit(table)
        return self

    @abstractmethod
    def _fit(self, table: QueryTable) -> None:
        """Learn state from the query table (the pooled pair stats are already set)."""

    def embed_table(self, table: QueryTable) -> np.ndarray:
        """Embeddings of the table's queries with the fit-time encoder."""
        return self.encoder().encode(table.queries)

    # -- routing ----------------------------------------------------------------------------------
    def route(self, queries: Queries | str, alpha: float | None = None) -> list[Decision]:
        """One Decision per query; ``queries`` are texts, or embeddings from the router's encoder."""
        if not self.is_fitted:
            raise AtlasError(f"router '{self.name}' is not fitted: call fit(records, encoder) or load a router file")
        queries, a = route_inputs(queries, alpha, self.alpha)
        if isinstance(queries, np.ndarray) and queries.dtype.kind in "fc":
            if self.needs_text:
                raise AtlasError(f"router '{self.name}' routes query texts, not embeddings")
            if queries.ndim != 2:
                raise AtlasError(f"embeddings must be a 2-D array, got shape {queries.shape}")
        else:
            queries = [str(q) for q in queries]
        if len(queries) == 0:
            return []
        return self._route(queries, a)

    @abstractmethod
    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        """Route a non-empty batch (texts or embeddings) under utility weight ``alpha``."""

    def embed(self, queries: Queries) -> np.ndarray:
        """Embeddings for texts (encoded now) or embeddings given by the caller (checked)."""
        if isinstance(queries, np.ndarray) and queries.dtype.kind in "fc":
            dim = getattr(self, "embedding_dim_", None)
            if dim is not None and queries.shape[1] != dim:
                raise AtlasError(
                    f"embeddings have width {queries.shape[1]}, router '{self.name}' was fitted on width {dim} "
                    f"({self.encoder_name_})"
                )
            return np.asarray(queries, dtype=np.float32)
        return self.encoder().encode(list(queries))

    def encoder(self) -> Encoder:
        """The encoder this router was fitted with (rebuilt from its spec after loading)."""
        enc = getattr(self, "_encoder", None)
        if enc is None:
            spec = getattr(self, "encoder_spec_", None)
            if spec is None:
                raise AtlasError(f"router '{self.name}' has no encoder")
            enc = build_encoder(spec)
            self._encoder = enc
        return enc

    def set_encoder(self, encoder: Encoder) -> "Router":
        """Share an already-built encoder (same name as at fit time) instead of rebuilding one."""
        expected = getattr(self, "encoder_name_", None)
        if expected is not None and encoder.name != expected:
            raise AtlasError(f"router was fitted with encoder '{expected}', got '{encoder.name}'")
        self._encoder = encoder
        return self

    # -- persistence ------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """What this router was fitted on and with: enough to reproduce or audit it."""
        params = {k: _plain(v) for k, v in self.get_params().items()}
        return {
            "router": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "params": params,
            "k": params.get("k"),
            "seed": params.get("seed"),
            "encoder": getattr(self, "encoder_name_", None),
            "encoder_spec": getattr(self, "encoder_spec_", None),
            "data_hash": getattr(self, "data_hash_", None),
            "n_records": getattr(self, "n_records_", None),
            "n_queries": getattr(self, "n_queries_", None),
            "pairs": [list(p) for p in getattr(self, "pairs_", [])],
            "versions": library_versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for k in [k for k in state if k.startswith("_")]:  # runtime handles: encoders, models, caches
            state.pop(k)
        return state


class WrappedRouter(Router):
    """A router that routes with the fitted state of the router it wraps (``base``) plus state of its own
    derived from it. ``fit`` fits the base (a base that is fitted already may be wrapped as it is); the
    pairs, costs and encoder are the base's, so replay evaluation and the gateway treat it like any router.
    Subclasses implement ``_route`` on the base's embeddings and may refresh derived state in
    ``_refit``."""

    def __init__(self, base: Router) -> None:
        if not isinstance(base, Router):
            raise AtlasError(f"a wrapped router wraps a Router, got {type(base).__name__}")
        self.base = base

    @property
    def alpha(self) -> float:  # type: ignore[override]
        return self.base.alpha

    @property
    def seed(self) -> int:  # type: ignore[override]
        return self.base.seed

    @property
    def is_fitted(self) -> bool:
        return self.base.is_fitted

    def fit(self, records: pd.DataFrame, encoder: Encoder | None = None) -> "WrappedRouter":
        self.base.fit(records, encoder)
        self._refit()
        return self

    def _fit(self, table: QueryTable) -> None:  # pragma: no cover - fit() above fits the base instead
        raise AssertionError("a wrapped router is fitted through its base")

    def _refit(self) -> None:
        """Derived state to rebuild after the base was (re)fitted."""

    def embed(self, queries: Queries) -> np.ndarray:
        return self.base.embed(queries)

    def encoder(self) -> Encoder:
        return self.base.encoder()

    def set_encoder(self, encoder: Encoder) -> "WrappedRouter":
        self.base.set_encoder(encoder)
        return self

    def __getattr__(self, name: str) -> Any:
        """Fitted attributes (``pairs_``, ``pair_cost_``, ``encoder_name_``, ...) are the base's."""
        if name.endswith("_") and not name.startswith("_") and "base" in self.__dict__:
            return getattr(self.__dict__["base"], name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")


def route_inputs(queries: "Queries | str", alpha: float | None, default_alpha: float) -> tuple["Queries", float]:
    """The checked cost weight (``default_alpha`` when none is given) and the queries as a batch (one text
    becomes a batch of one): what every ``route`` starts with."""
    return ([queries] if isinstance(queries, str) else queries), check_alpha(default_alpha if alpha is None
                                                                                 else alpha)


def _plain(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a fitted router depends on (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("atlas-router", "numpy", "scikit-learn", "pandas", "torch", "sentence-transformers"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


# -- registry -------------------------------------------------------------------------------------
# Built-in routers by name, imported on first use so that `atlas route` never imports torch needlessly.
_BUILTIN: dict[str, str] = {
    "atlas-cluster": "atlas_router.routers.cluster:ClusterRouter",
    "atlas-cluster-paper": "atlas_router.routers.cluster:PaperClusterRouter",
    "random": "atlas_router.routers.baselines.simple:RandomRouter",
    "best-single": "atlas_router.routers.baselines.simple:BestSingleRouter",
    "oracle": "atlas_router.routers.baselines.oracle:OracleRouter",
    "knn": "atlas_router.routers.baselines.knn:KNNRouter",
    "mlp": "atlas_router.routers.baselines.mlp:MLPRouter",
    "bert": "atlas_router.routers.baselines.bert:BertRouter",
    "routerdc": "atlas_router.routers.baselines.routerdc:RouterDCRouter",
    "zero-shot": "atlas_router.routers.baselines.llm:ZeroShotLLMRouter",
    "few-shot": "atlas_router.routers.baselines.llm:FewShotLLMRouter",
}
_REGISTERED: dict[str, type[Router]] = {}


def register_router(cls: type[Router]) -> type[Router]:
    """Class decorator: make a router available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute 'name'")
    _REGISTERED[cls.name] = cls
    return cls


def router_names() -> list[str]:
    return list(dict.fromkeys([*_BUILTIN, *_REGISTERED]))


def router_class(name: str) -> type[Router]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise AtlasError(f"unknown router '{name}'; known routers: {', '.join(router_names())}")
    return import_object(_BUILTIN[name])


def make_router(name: str, **params: Any) -> Router:
    """A new, unfitted router by registry name with the given settings."""
    cls = router_class(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise AtlasError(f"router '{name}': {err}") from None
