"""Reading search results for a small model: the few sentences that answer the question, not whole pages.

A 135M model handed three 600-character passages copies a stray number ("120" for the capital of
Canada), and handed two sentences it copies the last one; handed the one sentence "Canada: Its capital
is Ottawa and its largest city is Toronto." it answers. The model still reads and answers: nothing
here picks the answer.
"""

from __future__ import annotations

import re

import bm25s
import Stemmer

from atlas_router.tools.web_search.base import Snippet

_STEMMER = Stemmer.Stemmer("english")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_ABBREVIATION = re.compile(r"\b(?:[A-Z]|Mr|Mrs|Dr|St|Jr|D\.C|U\.S|vs|e\.g|i\.e)\.$")


def sentences(text: str) -> list[str]:
    """Sentences of a passage (a split after an initial like "J. K." or "D.C." is undone)."""
    parts = _SENTENCE_END.split(text.strip())
    out: list[str] = []
    for part in parts:
        if out and _ABBREVIATION.search(out[-1]):
            out[-1] = f"{out[-1]} {part}"
        else:
            out.append(part)
    return [s.strip() for s in out if s.strip()]


def _stems(text: str) -> set[str]:
    tokens = bm25s.tokenize([text], stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)
    return set(tokens[0]) if tokens and tokens[0] else set()


def best_sentences(query: str, snippets: list[Snippet], n: int = 1) -> list[tuple[str, str]]:
    """The ``n`` (title, sentence) pairs that best answer ``query``, best first.

    The search already ranked the passages, so passages keep their order; within a passage, sentences are
    ranked by how many of the query's words they hold *beyond the passage title's* (the title is what made
    the passage match: "capital of Canada" then wants the sentence with "capital", not the one with
    "Canada"), and ties go to the earlier sentence.
    """
    query_stems = _stems(query)
    ranked: list[tuple[str, str]] = []
    for snippet in snippets:
        wanted = query_stems - _stems(snippet.title)
        sents = sentences(snippet.text)
        order = sorted(range(len(sents)), key=lambda i: (-len(wanted & _stems(sents[i])), i))
        ranked += [(snippet.title, sents[i]) for i in order]
    return ranked[:n]


def format_sentences(pairs: list[tuple[str, str]]) -> str:
    """One line per sentence, prefixed by its page title."""
    return "\n".join(f"{title}: {sent}" if title else sent for title, sent in pairs)
