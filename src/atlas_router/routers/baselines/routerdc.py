"""RouterDC (Chen et al., NeurIPS 2024): a query encoder and learnable pair embeddings trained with
dual contrastive losses, here over the frozen sentence encoder with a trainable projection.

Model
    ``h(q) = normalise(MLP(e(q)))`` where ``e`` is the frozen encoder; one learnable vector ``k_p``
    per pair; affinity ``s(q, p) = cos(h(q), k_p) / temperature``.
Sample-pair contrastive loss
    For each training query, the ``top_k`` best-scoring pairs are positives and the ``bottom_k``
    worst are negatives (pairs tied with the k-th one join them: binary scores tie a lot); each
    positive is pulled above all negatives: ``-log(exp(s+) / (exp(s+) + sum_neg exp(s-)))``,
    averaged over positives. Only pairs that actually differ count: a positive must beat the
    query's worst score and a negative must trail its best.
Sample-sample contrastive loss
    The training queries are clustered (k-means on the frozen embeddings); in a batch, each query is
    pulled towards another query of its cluster and pushed from queries of other clusters. It keeps
    similar queries close in the projected space, which steadies training (weight ``lambda_ss``).
Settings (docs/routing.md): top_k = bottom_k = 3, temperature 1.0, 3 clusters, sample-sample weight 1,
    500 training steps of batch 32: LLMRouter's shipped ``configs/model_config_train/dcrouter.yaml`` (and
    lambda = 1 of the paper). Deviation forced by the CPU and offline weights: the encoder is the frozen
    MiniLM with a trainable projection (not a fine-tuned mDeBERTa-v3-base), so the learning rate is the
    1e-3 of a freshly initialised projection rather than the 5e-5 of fine-tuning a pretrained encoder.
Decision
    Affinities are mapped to per-pair success probabilities by one logistic calibration per pair
    (fitted on the training queries), so RouterDC plugs into the same a-utility as every router.
"""

from __future__ import annotations

import numpy as np

from atlas_router.routers.base import Queries
from atlas_router.routers.baselines.common import ScoreRouter
from atlas_router.routers.table import QueryTable


class RouterDCRouter(ScoreRouter):
    name = "routerdc"

    def __init__(self, alpha: float = 0.5, seed: int = 0, dim: int = 128, hidden: int = 256, top_k: int = 3,
                 bottom_k: int = 3, temperature: float = 1.0, lambda_ss: float = 1.0, n_clusters: int = 3,
                 steps: int = 500, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.dim = dim
        self.hidden = hidden
        self.top_k = top_k
        self.bottom_k = bottom_k
        self.temperature = temperature
        self.lambda_ss = lambda_ss
        self.n_clusters = n_clusters
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay

    # -- model ------------------------------------------------------------------------------------
    def _network(self, in_dim: int, n_pairs: int):
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(net, d_in: int, hidden: int, dim: int, pairs: int) -> None:
                super().__init__()
                net.proj = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, dim))
                net.pairs = nn.Parameter(torch.randn(pairs, dim) * 0.1)

            def embed(net, x):
                return nn.functional.normalize(net.proj(x), dim=-1)

            def forward(net, x):
                return net.embed(x) @ nn.functional.normalize(net.pairs, dim=-1).T

        return Net(in_dim, self.hidden, self.dim, n_pairs)

    def _fit(self, table: QueryTable) -> None:
        import torch
        from sklearn.cluster import KMeans

        emb = self.embed_table(table)
        self.embedding_dim_ = emb.shape[1]
        scores = np.nan_to_num(table.scores, nan=-1.0)  # missing pairs rank below every graded one
        graded = ~np.isnan(table.scores)
        n_pairs = scores.shape[1]
        srt = -np.sort(-scores, axis=1)
        kth_best = srt[:, min(self.top_k, n_pairs) - 1][:, None]
        kth_worst = np.sort(np.where(graded, scores, np.inf), axis=1)[:, min(self.bottom_k, n_pairs) - 1][:, None]
        best = np.where(graded, scores, -np.inf).max(1)[:, None]
        worst = np.where(graded, scores, np.inf).min(1)[:, None]
        # ties at the k-th place count on the same side: binary scores often tie many pairs
        pos = graded & (scores >= kth_best) & (scores > worst)
        neg = graded & (scores <= kth_worst) & (scores < best)
        useful = pos.any(1) & neg.any(1)
        k = max(1, min(self.n_clusters, len(emb)))
        clusters = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit_predict(emb)

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        net = self._network(emb.shape[1], n_pairs)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        x_all = torch.from_numpy(emb)
        pos_t, neg_t = torch.from_numpy(pos), torch.from_numpy(neg)
        clus_t = torch.from_numpy(clusters.astype(np.int64))
        idx_useful = np.flatnonzero(useful)
        tau = float(self.temperature)
        net.train()
        batches = _batches(rng, idx_useful, int(self.batch_size), int(self.steps))
        for chunk in batches:
            b = torch.from_numpy(chunk)
            h = net.embed(x_all[b])
            logits = h @ torch.nn.functional.normalize(net.pairs, dim=-1).T / tau
            loss = _sample_pair_loss(logits, pos_t[b], neg_t[b])
            if self.lambda_ss > 0 and len(b) > 2:
                loss = loss + self.lambda_ss * _sample_sample_loss(h, clus_t[b], tau, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        self.net_state_ = {k: v.detach().clone() for k, v in net.state_dict().items()}
        self._net = net
        self._calibrate(self._affinity(emb), table.scores)

    def _calibrate(self, affinity: np.ndarray, scores: np.ndarray) -> None:
        """Per pair, success probability = sigmoid(a * affinity + b), fitted by logistic regression."""
        from sklearn.linear_model import LogisticRegression

        coef = np.zeros(affinity.shape[1])
        bias = np.zeros(affinity.shape[1])
        pooled = np.nan_to_num(self.pair_accuracy_, nan=0.0)
        for p in range(affinity.shape[1]):
            have = ~np.isnan(scores[:, p])
            y = (scores[have, p] >= 0.5).astype(int)
            if have.sum() < 2 or y.min() == y.max():
                bias[p] = np.log(max(pooled[p], 1e-4) / max(1 - pooled[p], 1e-4))
                continue
            lr = LogisticRegression(C=1.0).fit(affinity[have, p : p + 1], y)
            coef[p], bias[p] = lr.coef_[0, 0], lr.intercept_[0]
        self.calib_coef_, self.calib_bias_ = coef, bias

    def _affinity(self, emb: np.ndarray) -> np.ndarray:
        import torch

        net = getattr(self, "_net", None)
        if net is None:
            net = self._network(self.embedding_dim_, len(self.net_state_["pairs"]))
            net.load_state_dict(self.net_state_)
            net.eval()
            self._net = net
        with torch.no_grad():
            return net(torch.from_numpy(np.asarray(emb, dtype=np.float32))).numpy().astype(np.float64)

    def predict_accuracy(self, queries: Queries) -> np.ndarray:
        aff = self._affinity(self.embed(queries))
        return 1.0 / (1.0 + np.exp(-(aff * self.calib_coef_ + self.calib_bias_)))


def _batches(rng: np.random.Generator, idx: np.ndarray, size: int, steps: int) -> list[np.ndarray]:
    """``steps`` batches of ``size`` indices, passing over ``idx`` in fresh random orders."""
    out: list[np.ndarray] = []
    while len(idx) and len(out) < steps:
        perm = rng.permutation(idx)
        out += [perm[s : s + size] for s in range(0, len(perm), size)]
    return out[:steps]


def _sample_pair_loss(logits, pos, neg):
    """Mean over (query, positive) of -log(e^{s+} / (e^{s+} + sum_neg e^{s-}))."""
    import torch

    neg_lse = torch.logsumexp(logits.masked_fill(~neg, float("-inf")), dim=1, keepdim=True)
    per = torch.nn.functional.softplus(neg_lse - logits)  # = -log(e^s+ / (e^s+ + e^lse))
    per = per.masked_fill(~pos, 0.0)
    return per.sum() / pos.sum().clamp(min=1)


def _sample_sample_loss(h, clusters, tau, gen):
    """InfoNCE in the batch: each query's positive is a random same-cluster query, negatives other clusters."""
    import torch

    sim = h @ h.T / tau
    n = len(clusters)
    same = clusters[:, None] == clusters[None, :]
    cand = same & ~torch.eye(n, dtype=torch.bool)
    others = ~same
    valid = cand.any(1) & others.any(1)
    if not bool(valid.any()):
        return sim.new_zeros(())
    pick = torch.rand(n, n, generator=gen).masked_fill(~cand, -1.0).argmax(1)
    chosen = torch.zeros(n, n, dtype=torch.bool)
    chosen[torch.arange(n), pick] = True
    lse = torch.logsumexp(sim.masked_fill(~(others | chosen), float("-inf")), dim=1)
    loss = lse - sim[torch.arange(n), pick]
    return loss[valid].mean()
