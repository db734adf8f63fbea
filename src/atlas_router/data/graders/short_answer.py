"""Short free-text answers (Natural Questions, WebQuestions): exact match and token F1.

Normalisation follows the SQuAD evaluation: lowercase, drop punctuation, drop the articles a/an/the,
collapse whitespace. A question may accept several answers; the score is the best over them.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence

from atlas_router.core.answers import extract_answer

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def references_of(reference: object) -> list[str]:
    """Accepted answers from a reference: a list, a JSON-encoded list, or one string."""
    if isinstance(reference, str):
        stripped = reference.strip()
        if stripped.startswith("["):
            try:
                decoded = json.loads(stripped)
            except ValueError:
                decoded = None
            if isinstance(decoded, list):
                return [str(r) for r in decoded]
        return [reference]
    if isinstance(reference, Sequence):
        return [str(r) for r in reference]
    return [str(reference)]


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(r) for r in references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """Best token-overlap F1 between the prediction and any reference."""
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for ref in references:
        ref_tokens = normalize_answer(ref).split()
        if not pred_tokens or not ref_tokens:
            best = max(best, float(pred_tokens == ref_tokens))
            continue
        common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred_tokens), common / len(ref_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def grade_short_answer(prediction: str, reference: object, metric: str = "em") -> float:
    """Score the reply's stated answer ("Final answer: ...", else its last line) by ``em``, ``f1`` or
    ``contains``."""
    refs = references_of(reference)
    answer = extract_answer(prediction or "")
    if metric == "f1":
        return token_f1(answer, refs)
    if metric == "contains":
        return contains_match(answer, refs)
    return exact_match(answer, refs)


def contains_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when a normalised reference occurs, as whole words, in the normalised stated answer.

    The "match" metric of open-domain QA with generative readers: "The capital of Canada is Ottawa"
    counts for Ottawa. It reads only the stated answer (the final-answer line), not the whole reply.
    """
    pred = f" {normalize_answer(prediction)} "
    return float(any(ref and f" {ref} " in pred for ref in (normalize_answer(r) for r in references)))
