"""A fine-tuned transformer classifier: MiniLM with a head predicting each pair's success.

This stands in for the mDeBERTa-v3 router of the literature (RouterDC, RouteLLM's BERT router) at a
size that trains on a CPU: all-MiniLM-L6-v2 (6 layers, 384 wide, the default
encoder's weights), mean pooling, a linear head with one output per pair, trained with binary cross
entropy against the recorded scores (soft labels; missing records are masked out).

Settings (docs/routing.md lists each with its source): inputs cut at ``max_length`` 128 tokens,
``epochs`` 3, batch 32, AdamW with learning rate 1e-4 for the fine-tuned layers and 1e-3 for the new
head. Deviation forced by the CPU and offline weights: MiniLM (6 layers) stands in for mDeBERTa-v3-base,
and only the top ``train_layers`` (1) transformer layer and the head are fine-tuned; the frozen lower
layers run once per training query and their outputs are cached, so an epoch costs about
``train_layers / 6`` of a forward pass. On two CPU cores, fitting on 4k questions takes minutes.
"""

from __future__ import annotations

import numpy as np

from atlas_router.errors import AtlasError
from atlas_router.routers.base import Queries
from atlas_router.routers.baselines.common import ScoreRouter
from atlas_router.routers.encoders.local import default_model_dir
from atlas_router.routers.table import QueryTable


def _layer_out(out):
    return out[0] if isinstance(out, tuple) else out


class BertRouter(ScoreRouter):
    name = "bert"
    needs_text = True
    uses_encoder = False

    def __init__(self, alpha: float = 0.5, seed: int = 0, model: str | None = None, max_length: int = 128,
                 train_layers: int = 1, epochs: int = 3, batch_size: int = 32, lr: float = 1e-4,
                 head_lr: float = 1e-3) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.model = model
        self.max_length = max_length
        self.train_layers = train_layers
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.head_lr = head_lr

    # -- network ----------------------------------------------------------------------------------
    def _load_backbone(self):
        from transformers import AutoModel, AutoTokenizer

        where = self.model or str(default_model_dir())
        try:
            tok = AutoTokenizer.from_pretrained(where)
            net = AutoModel.from_pretrained(where)
        except (OSError, ValueError) as err:
            raise AtlasError(f"bert router: cannot load model '{where}': {err}") from None
        layers = getattr(getattr(net, "encoder", None), "layer", None)
        if layers is None:
            raise AtlasError(f"bert router: '{where}' is not a BERT-style encoder (no encoder.layer)")
        return tok, net

    @staticmethod
    def _additive_mask(mask, dtype):
        import torch

        return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    def _split(self) -> int:
        n = len(self._net.encoder.layer)
        return max(0, n - max(0, min(int(self.train_layers), n)))

    def _bottom(self, batch):
        """Hidden states after the frozen layers (embeddings + layers [0, split))."""
        net = self._net
        h = net.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        ext = self._additive_mask(batch["attention_mask"], h.dtype)
        for layer in net.encoder.layer[: self._split()]:
            h = _layer_out(layer(h, ext))
        return h

    def _top(self, h, mask):
        """Trainable layers, mean pooling and the head: logits per pair."""
        ext = self._additive_mask(mask, h.dtype)
        for layer in self._net.encoder.layer[self._split() :]:
            h = _layer_out(layer(h, ext))
        m = mask[:, :, None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self._head(pooled)

    def _tokenize(self, texts: list[str]):
        return self._tok(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")

    def _batches(self, texts: list[str]) -> list[np.ndarray]:
        """Index batches of similar length (less padding)."""
        lengths = np.array([len(t) for t in texts])
        order = np.argsort(lengths, kind="stable")
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    # -- fit / predict ------------------------------------------------------------------------------
    def _fit(self, table: QueryTable) -> None:
        import torch

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self._tok, self._net = self._load_backbone()
        hidden = self._net.config.hidden_size
        self._head = torch.nn.Linear(hidden, len(self.pairs_))
        pooled = np.clip(np.nan_to_num(self.pair_accuracy_, nan=0.5), 1e-3, 1 - 1e-3)
        with torch.no_grad():
            self._head.bias.copy_(torch.from_numpy(np.log(pooled / (1 - pooled))).float())
        split = self._split()
        for i, p in enumerate(self._net.parameters()):
            p.requires_grad_(False)
        for layer in self._net.encoder.layer[split:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        targets = torch.from_numpy(np.nan_to_num(table.scores, nan=0.0)).float()
        known = torch.from_numpy(~np.isnan(table.scores)).float()

        self._net.eval()  # frozen part: no dropout while caching
        cache = []
        with torch.no_grad():
            for idx in self._batches(table.queries):
                enc = self._tokenize([table.queries[i] for i in idx])
                cache.append((idx, self._bottom(enc), enc["attention_mask"]))

        params = [{"params": self._head.parameters(), "lr": self.head_lr}]
        top_params = [p for layer in self._net.encoder.layer[split:] for p in layer.parameters()]
        if top_params:
            params.append({"params": top_params, "lr": self.lr})
        opt = torch.optim.AdamW(params, weight_decay=0.01)
        for layer in self._net.encoder.layer[split:]:
            layer.train()
        loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
        for _ in range(int(self.epochs)):
            for b in rng.permutation(len(cache)):
                idx, h, mask = cache[b]
                logits = self._top(h, mask)
                loss = (loss_fn(logits, targets[idx]) * known[idx]).sum() / known[idx].sum().clamp(min=1.0)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self._net.eval()
        self.head_state_ = {k: v.detach().clone() for k, v in self._head.state_dict().items()}
        self.top_state_ = {f"{i}.{k}": v.detach().clone()
                           for i, layer in enumerate(self._net.encoder.layer[split:])
                           for k, v in layer.state_dict().items()}

    def _restore(self) -> None:
        import torch

        self._tok, self._net = self._load_backbone()
        self._head = torch.nn.Linear(self._net.config.hidden_size, len(self.pairs_))
        self._head.load_state_dict(self.head_state_)
        for i, layer in enumerate(self._net.encoder.layer[self._split() :]):
            layer.load_state_dict({k.split(".", 1)[1]: v for k, v in self.top_state_.items() if k.startswith(f"{i}.")})
        self._net.eval()

    def predict_accuracy(self, queries: Queries) -> np.ndarray:
        import torch

        if getattr(self, "_net", None) is None:
            self._restore()
        texts = list(queries)
        out = np.zeros((len(texts), len(self.pairs_)))
        with torch.no_grad():
            for idx in self._batches(texts):
                enc = self._tokenize([texts[i] for i in idx])
                out[idx] = torch.sigmoid(self._top(self._bottom(enc), enc["attention_mask"])).numpy()
        return out
