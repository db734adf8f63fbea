"""Token counting for replies whose server reports no usage.

A Hugging Face tokenizer named by the model spec (``tokenizer`` in ``weights`` form) is used when it
loads; otherwise the bundled SmolLM2 tokenizer, which is close to the BPE vocabularies of most open models.
"""

from __future__ import annotations

import functools
from typing import Any

from atlas_router.config import SMOLLM2_WEIGHTS
from atlas_router.models.weights import resolve_weights


@functools.lru_cache(maxsize=4)
def load_tokenizer(weights: str = SMOLLM2_WEIGHTS) -> Any:
    """A tokenizer from a GGUF file, a local directory or a hub id (hub ids need internet)."""
    from transformers import AutoTokenizer

    path = resolve_weights(weights)
    if path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoTokenizer.from_pretrained(str(path))


def count_tokens(text: str, weights: str | None = None) -> int:
    """Number of tokens of ``text`` under the given (or the bundled) tokenizer."""
    tok = load_tokenizer(weights) if weights else load_tokenizer()
    return len(tok.encode(text, add_special_tokens=False))


def count_message_tokens(messages: list[dict[str, Any]], weights: str | None = None) -> int:
    """Prompt tokens of a conversation: the text of every message plus a few per message for roles."""
    total = 0
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):  # content parts: count the text parts only
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        total += count_tokens(str(content), weights) + 4
    return total
