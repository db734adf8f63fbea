"""Online learning for a fitted ClusterRouter without re-clustering: graded feedback updates cell counts.

Why: clusters are expensive to refit and stable; what drifts is how well each pair does in each
cluster (a model is updated, a tool breaks, a new pair joins the pool). Feedback (query, pair,
score, cost) is assigned to the query's cluster with the router's own encoder and centroids and
added to that cell's counts, and to the pooled row. Nothing of the fitted router changes.

Persistence: ``FeedbackStore`` keeps the counts in a JSON sidecar beside the router file
(``<router file>.feedback.json``), rewritten atomically (temporary file, fsync, ``os.replace``) after
each update, so a restart, or a crash mid-write, keeps every acknowledged update. The sidecar records
the router's fingerprint (data hash, number of clusters, centroid hash) and refuses to load against
another fit, since cluster numbers mean nothing across fits. One process should write a sidecar
(e.g. the gateway); concurrent writers in several processes would overwrite each other's updates.

Decisions (``OnlineClusterRouter``): per query, the base router's statistics are the prior, with
weight ``n + m`` (records behind the cell plus the shrinkage pseudo-count; the pooled row has no
pseudo-count), and feedback adds its counts on top:
``Acc = (Acc_base * (n + m) + s_fb) / (n + m + n_fb)`` and the same for cost. With no feedback the
decisions are the base router's. Where the base router exposes per-query statistics
(``query_tables``), they are the prior; else its cluster-level tables.

New pairs (``add_pair``): a pair that joins the pool after fitting gets a prior accuracy (default the
base router's ``prior_accuracy``) worth ``prior_strength`` pseudo-records and a given mean cost. Each
cluster sends its first ``probe_budget`` queries to it (exploration; the explanation says
``probe``), so feedback on it arrives; then it competes on its updated statistics like any other
pair. Out-of-distribution queries are never probes and their feedback goes to the pooled row only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Decision, Queries, Router, WrappedRouter
from atlas_router.routers.persist import load_router
from atlas_router.routers.encoders import Encoder
from atlas_router.routers.table import Pair, pair_label
from atlas_router.routers.utility import best_pairs, utility

FORMAT = "atlas-feedback"
VERSION = 1
SUFFIX = ".feedback.json"


def sidecar_path(router_path: str | Path) -> Path:
    """Where the feedback of a router file lives: ``<router file>.feedback.json`` beside it."""
    p = Path(router_path).expanduser()
    return p.with_name(p.name + SUFFIX)


def router_fingerprint(router: Any) -> dict[str, Any]:
    """What identifies a fit's clusters: data hash, cluster count and a hash of the centroids."""
    for attr in ("centroids_", "n_clusters_", "pairs_"):
        if not hasattr(router, attr):
            raise AtlasError(f"feedback needs a fitted cluster router (missing '{attr}')")
    centroids = np.ascontiguousarray(np.asarray(router.centroids_, dtype=np.float64))
    return {"data_hash": getattr(router, "data_hash_", None), "clusters": int(router.n_clusters_),
            "centroids": hashlib.sha256(centroids.tobytes()).hexdigest()[:16]}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class FeedbackStore:
    """Feedback counts per (cluster, pair), added pairs and probe counters, persisted as JSON.

    Cluster ``clusters`` (one past the last cluster) is the pooled row, written as ``-1`` in the file.
    """

    def __init__(self, path: str | Path | None, fingerprint: dict[str, Any], autosave: bool = True) -> None:
        """``path`` None keeps feedback in memory only (``save`` then refuses)."""
        self.path = Path(path).expanduser() if path is not None else None
        self.fingerprint = dict(fingerprint)
        self.clusters = int(fingerprint["clusters"])
        self.autosave = autosave
        self._lock = threading.RLock()
        self.cells: dict[tuple[int, str, str], list[float]] = {}  # [n, successes, cost_sum, cost_n]
        self.added: list[dict[str, Any]] = []
        self.probes: dict[tuple[int, str, str], int] = {}
        self.events = 0
        if self.path is not None and self.path.exists():
            self._load()

    # -- file -------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise AtlasError(f"{self.path}: unreadable feedback file ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise AtlasError(f"{self.path}: not an atlas feedback file")
        if data.get("version") != VERSION:
            raise AtlasError(f"{self.path}: feedback file version {data.get('version')}, this atlas-router reads {VERSION}")
        theirs = data.get("router", {})
        if {k: theirs.get(k) for k in self.fingerprint} != self.fingerprint:
            raise AtlasError(f"{self.path}: feedback was recorded for another fit of the router "
                             f"(data {theirs.get('data_hash')}, {theirs.get('clusters')} clusters); "
                             "move it away or refit from records that include it")
        try:
            for c in data.get("cells", []):
                row = self._row(int(c["cluster"]))
                self.cells[(row, str(c["model"]), str(c["tool"]))] = [
                    float(c["n"]), float(c["successes"]), float(c["cost_sum"]), float(c["cost_n"])]
            self.added = [{"model": str(a["model"]), "tool": str(a["tool"]), "cost": float(a["cost"]),
                           "prior_accuracy": float(a["prior_accuracy"])} for a in data.get("added_pairs", [])]
            for p in data.get("probes", []):
                self.probes[(int(p["cluster"]), str(p["model"]), str(p["tool"]))] = int(p["count"])
            self.events = int(data.get("events", 0))
        except (KeyError, TypeError, ValueError) as err:
            raise AtlasError(f"{self.path}: malformed feedback file ({type(err).__name__}: {err})") from None

    def _row(self, cluster: int) -> int:
        row = self.clusters if cluster == -1 else cluster
        if not 0 <= row <= self.clusters:
            raise AtlasError(f"cluster {cluster} out of range: the router has {self.clusters} clusters")
        return row

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            def cl(row: int) -> int:
                return -1 if row == self.clusters else row

            return {
                "format": FORMAT, "version": VERSION, "router": self.fingerprint, "events": self.events,
                "cells": [{"cluster": cl(r), "model": m, "tool": t, "n": v[0], "successes": v[1], "cost_sum": v[2],
                           "cost_n": v[3]} for (r, m, t), v in sorted(self.cells.items())],
                "added_pairs": list(self.added),
                "probes": [{"cluster": c, "model": m, "tool": t, "count": n}
                           for (c, m, t), n in sorted(self.probes.items())],
            }

    def save(self) -> Path:
        """Write the sidecar atomically."""
        if self.path is None:
            raise AtlasError("this feedback store is in memory only: give it a path to save")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.path, json.dumps(self.to_dict(), indent=1).encode("utf-8"))
        return self.path

    def _changed(self) -> None:
        if self.autosave and self.path is not None:
            self.save()

    # -- updates ----------------------------------------------------------------------------------
    def record(self, cluster: int | None, pair: Pair, score: float, cost: float | None = None,
               save: bool = True) -> None:
        """Add one graded outcome to ``cluster`` (None: out of distribution) and to the pooled row."""
        s = float(score)
        if not 0.0 <= s <= 1.0 or math.isnan(s):
            raise AtlasError(f"feedback score must lie in [0, 1], got {score}")
        c = None if cost is None else float(cost)
        if c is not None and (c < 0 or not math.isfinite(c)):
            raise AtlasError(f"feedback cost must be a finite number >= 0, got {cost}")
        model, tool = pair
        rows = [self.clusters] if cluster is None else sorted({self._row(int(cluster)), self.clusters})
        with self._lock:
            for row in rows:
                cell = self.cells.setdefault((row, str(model), str(tool)), [0.0, 0.0, 0.0, 0.0])
                cell[0] += 1.0
                cell[1] += s
                if c is not None:
                    cell[2] += c
                    cell[3] += 1.0
            self.events += 1
            if save:
                self._changed()

    def add_pair(self, pair: Pair, cost: float, prior_accuracy: float) -> None:
        model, tool = pair
        with self._lock:
            if any((a["model"], a["tool"]) == (model, tool) for a in self.added):
                raise AtlasError(f"pair {pair_label(pair)} was already added")
            self.added.append({"model": str(model), "tool": str(tool), "cost": float(cost),
                               "prior_accuracy": float(prior_accuracy)})
            self._changed()

    def take_probe(self, cluster: int, pair: Pair, budget: int) -> int | None:
        """Claim the next exploration slot of ``pair`` in ``cluster``: its 1-based index, or None when spent."""
        key = (int(cluster), str(pair[0]), str(pair[1]))
        with self._lock:
            used = self.probes.get(key, 0)
            if used >= int(budget):
                return None
            self.probes[key] = used + 1
            return used + 1

    def arrays(self, pairs: list[Pair]) -> np.ndarray:
        """(K+1, P, 4) array of [n, successes, cost_sum, cost_n] per row and pair."""
        index = {(str(m), str(t)): j for j, (m, t) in enumerate(pairs)}
        out = np.zeros((self.clusters + 1, len(pairs), 4))
        with self._lock:
            for (row, m, t), v in self.cells.items():
                j = index.get((m, t))
                if j is not None:
                    out[row, j] = v
        return out


class OnlineClusterRouter(WrappedRouter):
    """A ClusterRouter plus feedback counts and new pairs (see the module docs). Thread-safe. Wrap a fitted
    router as it is (``open`` loads one with its feedback file), or an unfitted one and ``fit`` it; a refit
    starts a fresh in-memory store (feedback counted in the old clusters means nothing in the new ones)."""

    name = "atlas-cluster-online"

    def __init__(self, base: Router, store: FeedbackStore | None = None, probe_budget: int = 5,
                 prior_strength: float | None = None) -> None:
        super().__init__(base)
        if int(probe_budget) < 0:
            raise AtlasError(f"probe budget must be >= 0, got {probe_budget}")
        self.store = store
        self.probe_budget = int(probe_budget)
        self.prior_strength = prior_strength
        self._probe_lock = threading.Lock()
        if base.is_fitted:
            self._refit()

    def _refit(self) -> None:
        base = self.base
        fp = router_fingerprint(base)
        if self.store is None or (self.store.path is None and self.store.fingerprint != fp):
            self.store = FeedbackStore(None, fp)
        elif self.store.fingerprint != fp:
            raise AtlasError(f"{self.store.path}: feedback store belongs to another fit of the router")
        m = float(_shrinkage(base, 10.0)) if self.prior_strength is None else float(self.prior_strength)
        self.prior_strength_ = max(m, 1.0)
        clash = [a for a in self.store.added if (a["model"], a["tool"]) in set(base.pairs_)]
        if clash:
            raise AtlasError(f"added pair {clash[0]['model']}+{clash[0]['tool']} is already one of the router's pairs")

    @classmethod
    def open(cls, router_path: str | Path, encoder: Encoder | None = None, **kwargs: Any) -> "OnlineClusterRouter":
        """Load a router file and the feedback sidecar beside it (created on the first update)."""
        base = load_router(router_path, encoder)
        return cls(base, FeedbackStore(sidecar_path(router_path), router_fingerprint(base)), **kwargs)

    # -- pairs ------------------------------------------------------------------------------------
    @property
    def pairs_(self) -> list[Pair]:
        return list(self.base.pairs_) + [(a["model"], a["tool"]) for a in self.store.added]

    @property
    def pair_cost_(self) -> np.ndarray:
        return np.concatenate([np.asarray(self.base.pair_cost_, float), [a["cost"] for a in self.store.added]])

    def add_pair(self, model: str, tool: str = "none", cost: float = 0.0, prior_accuracy: float | None = None) -> None:
        """Make a pair without records routable: prior accuracy, mean cost, and probes in every cluster."""
        pair = (str(model), str(tool))
        if pair in set(self.base.pairs_):
            raise AtlasError(f"pair {pair_label(pair)} is already one of the router's pairs")
        p0 = float(getattr(self.base, "prior_accuracy", 0.5)) if prior_accuracy is None else float(prior_accuracy)
        if not 0.0 <= p0 <= 1.0:
            raise AtlasError(f"prior accuracy must lie in [0, 1], got {prior_accuracy}")
        if not (math.isfinite(float(cost)) and float(cost) >= 0):
            raise AtlasError(f"cost of a new pair must be a finite number >= 0, got {cost}")
        self.store.add_pair(pair, float(cost), p0)

    # -- feedback ---------------------------------------------------------------------------------
    def _locate(self, queries: Queries) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        emb = self.base.embed(queries)
        clusters, dist = self.base.assign(emb)
        return emb, np.asarray(clusters), np.asarray(dist) > self.base.ood_threshold_

    def record(self, query: str | np.ndarray, model: str, tool: str, score: float,
               cost: float | None = None) -> int | None:
        """Feedback for one query; returns the cluster it counted in (None: out of distribution)."""
        return self.record_many([query] if isinstance(query, str) else np.atleast_2d(query),
                                [(model, tool)], [score], None if cost is None else [cost])[0]

    def record_many(self, queries: Queries, pairs: list[Pair], scores: list[float],
                    costs: list[float | None] | None = None) -> list[int | None]:
        """Feedback for a batch (one embedding pass, one write); ``pairs`` may hold one pair for all."""
        n = len(queries)
        pairs = list(pairs) * n if len(pairs) == 1 else list(pairs)
        costs = [None] * n if costs is None else list(costs)
        if not (len(pairs) == len(scores) == len(costs) == n):
            raise AtlasError(f"feedback needs one pair, score and cost per query ({n} queries)")
        known = set(self.pairs_)
        for p in pairs:
            if tuple(p) not in known:
                raise AtlasError(f"unknown pair {pair_label(tuple(p))}: add it with add_pair first")
        _emb, clusters, ood = self._locate(queries)
        out: list[int | None] = []
        for c, o, p, s, co in zip(clusters, ood, pairs, scores, costs):
            cluster = None if o else int(c)
            self.store.record(cluster, tuple(p), s, co, save=False)
            out.append(cluster)
        self.store._changed()
        return out

    # -- routing ----------------------------------------------------------------------------------
    def _base_stats(self, emb: np.ndarray, alpha: float, clusters: np.ndarray, rows: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per query: the base router's (accuracy, cost, n) per base pair."""
        tables = getattr(self.base, "query_tables", None)
        if callable(tables):
            t = tables(emb, alpha)
            return np.asarray(t["accuracy"], float), np.asarray(t["cost"], float), np.asarray(t["n"], float)
        return (np.asarray(self.base.accuracy_, float)[rows], np.asarray(self.base.cost_, float)[rows],
                np.asarray(self.base.counts_, float)[rows])

    def stats(self, emb: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
        """Per query: cluster, ood, row and the combined accuracy, cost, prior n and feedback n per pair."""
        base = self.base
        clusters, dist = base.assign(emb)
        ood = dist > base.ood_threshold_
        k = int(base.n_clusters_)
        rows = np.where(ood & (base.ood_fallback == "pooled"), k, clusters)
        acc_b, cost_b, n_b = self._base_stats(emb, alpha, clusters, rows)
        m = np.where(rows == k, 0.0, float(_shrinkage(base, 0.0)))[:, None]
        added = self.store.added
        p0 = np.array([a["prior_accuracy"] for a in added], dtype=float)
        c0 = np.array([a["cost"] for a in added], dtype=float)
        w_prior = np.hstack([n_b + m, np.full((len(rows), len(added)), self.prior_strength_)])
        acc_prior = np.hstack([acc_b, np.broadcast_to(p0, (len(rows), len(added)))])
        cost_prior = np.hstack([cost_b, np.broadcast_to(c0, (len(rows), len(added)))])
        fb = self.store.arrays(self.pairs_)[rows]  # (N, P, 4)
        n_f, s_f, cs_f, cn_f = fb[..., 0], fb[..., 1], fb[..., 2], fb[..., 3]
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(w_prior + n_f > 0, (acc_prior * w_prior + s_f) / (w_prior + n_f), acc_prior)
            cost = np.where(w_prior + cn_f > 0, (cost_prior * w_prior + cs_f) / (w_prior + cn_f), cost_prior)
        return {"cluster": clusters, "distance": dist, "ood": ood, "row": rows, "accuracy": acc, "cost": cost,
                "n_prior": np.hstack([n_b, np.zeros((len(rows), len(added)))]),
                "n_feedback": n_f, "base_accuracy": acc_b, "base_cost": cost_b}

    def _route(self, queries: Queries, a: float) -> list[Decision]:
        """One Decision per query, from base statistics plus feedback; new pairs are probed first."""
        base = self.base
        t = self.stats(base.embed(queries), a)
        available = np.concatenate([np.asarray(getattr(base, "available_", np.ones(len(base.pairs_), bool)), bool),
                                    np.ones(len(self.store.added), dtype=bool)])
        u = utility(t["accuracy"], t["cost"], a, base.cost_scale_)
        u[:, ~available] = -np.inf
        choice = best_pairs(u, t["cost"])
        u_base = utility(t["base_accuracy"], t["base_cost"], a, base.cost_scale_)
        u_base[:, ~available[: len(base.pairs_)]] = -np.inf
        base_choice = best_pairs(u_base, t["base_cost"])
        pairs = self.pairs_
        out = []
        for i in range(len(choice)):
            j, probe = int(choice[i]), None
            if self.store.added and self.probe_budget > 0 and not t["ood"][i]:
                with self._probe_lock:
                    for jj in range(len(base.pairs_), len(pairs)):
                        slot = self.store.take_probe(int(t["cluster"][i]), pairs[jj], self.probe_budget)
                        if slot is not None:
                            j, probe = jj, {"pair": pair_label(pairs[jj]), "index": slot, "budget": self.probe_budget,
                                            "reason": "new pair: exploring its first queries in this cluster"}
                            break
            out.append(self._decision(i, j, int(base_choice[i]), probe, t, u[i], a))
        if any(d.explanation.get("probe") for d in out):
            self.store._changed()
        return out

    def _decision(self, i: int, j: int, base_j: int, probe: dict[str, Any] | None, t: dict[str, np.ndarray],
                  u: np.ndarray, alpha: float) -> Decision:
        pairs = self.pairs_
        model, tool = pairs[j]
        order = np.argsort(-u, kind="stable")[: max(int(getattr(self.base, "top", 3)), 1)]
        top = [{"model": pairs[p][0], "tool": pairs[p][1], "accuracy": round(float(t["accuracy"][i, p]), 4),
                "cost": float(t["cost"][i, p]), "n": int(round(float(t["n_prior"][i, p]))),
                "n_feedback": int(t["n_feedback"][i, p]), "utility": round(float(u[p]), 4)}
               for p in order if np.isfinite(u[p])]
        explanation = {
            "router": self.name, "cluster": int(t["cluster"][i]), "distance": round(float(t["distance"][i]), 4),
            "ood": bool(t["ood"][i]), "stats": "pooled" if t["row"][i] == self.base.n_clusters_ else "cluster",
            "alpha": alpha, "probe": probe,
            "feedback": {"n": int(t["n_feedback"][i, j]), "events": self.store.events,
                         "changed_choice": probe is None and pairs[base_j] != pairs[j]},
            "base_choice": pair_label(pairs[base_j]), "top": top,
        }
        return Decision(model, tool, float(u[j]), explanation, [pairs[p] for p in order if np.isfinite(u[p])])


def _shrinkage(base: Any, default: float) -> float:
    """The pseudo-count the base router's cells were shrunk with (fitted ``shrinkage_``, else the setting)."""
    for attr in ("shrinkage_", "shrinkage"):
        v = getattr(base, attr, None)
        if v is not None:
            return float(v)
    return default
