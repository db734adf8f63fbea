"""Graders that need no gold answer: an LLM judge, a reward model, agreement with a reference pair.

Gold graders score one reply against a reference (``grade(benchmark, text, example)``). These grade the
replies of every pair to one *unlabelled* prompt at once (``await grader.grade(question, responses)``),
because a pairwise judge or a reference pair needs the other replies. Each grade says who gave it
(``Grade.grader``, stored in the records' ``grader`` column), so judge-graded and gold-graded records
never mix unnoticed.

Grader specs (``atlas collect --grader SPEC``)::

    judge:MODEL                 pointwise LLM judge (1-10 rating), MODEL a pool model
    judge:MODEL_ID@URL          the same, MODEL_ID served by an OpenAI-compatible endpoint (vLLM, llama.cpp)
    judge-verdict:MODEL[@URL]   pointwise LLM judge answering yes/no "is the response correct?" (score 1/0)
    judge-pairwise:MODEL[@URL]  pairwise LLM judge, every two pairs compared in both orders
    prm:MODEL_ID@URL            a reward model behind vLLM's /pooling API (the prm tool's scorer)
    reference:MODEL@@TOOL       1 when a reply's final answer agrees with that pair's, else 0

Rubrics follow the single-answer and pairwise prompts of MT-Bench (Zheng et al., 2023, "Judging
LLM-as-a-judge"): a 1-10 rating written ``[[N]]`` mapped to (N-1)/9, and ``[[A]]``/``[[B]]``/``[[C]]``
(tie) for pairs. The verdict rubric asks one yes/no question, the instruction last: small judges that
cannot keep the ``[[N]]`` format still answer it (a yes/no verdict is also what a router's records mean
by a score: the reply was acceptable or not). A pairwise verdict counts only when it survives swapping the two replies' positions;
an inconsistent pair of verdicts is a tie, as in MT-Bench. A pair's pairwise score is its mean result
(win 1, tie 0.5, loss 0) against every other pair. A judge reply with no readable verdict grades NaN
("not graded"): routers ignore it and agreement reports count it as not covered.
"""

from __future__ import annotations

import asyncio
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

from atlas_router.errors import AtlasError
from atlas_router.core.answers import extract_answer
from atlas_router.models.base import ChatModel, SamplingParams
from atlas_router.tools.prm import AGGREGATES, PoolingRewardClient, RewardModelError, aggregate, vote_key

if TYPE_CHECKING:
    from atlas_router.pool.pool import Pool

Pair = tuple[str, str]
JUDGE_TIMEOUT_S = 600.0  # per call, for MODEL_ID@URL judges

POINTWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant "
    "to the user question displayed below. Check whether its final answer is correct (work the problem out "
    "yourself), then its helpfulness and clarity. Rate the response on a scale of 1 to 10: 10 correct and "
    "complete; 7-9 correct with minor flaws; 4-6 partly correct or no clear final answer; 1-3 wrong, "
    "off-topic or empty. Reply with the rating only, strictly in this format: [[rating]], for example "
    "[[5]]."
)
POINTWISE_USER = "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"

PAIRWISE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Choose the assistant whose final answer is correct and that "
    "answers the question better. Do not let the order of the responses, their length or the assistants' "
    "names influence you. Reply with your verdict only, strictly in this format: [[A]] if assistant A is "
    "better, [[B]] if assistant B is better, [[C]] for a tie."
)
PAIRWISE_USER = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
)

VERDICT_USER = ("[Question]\n{question}\n\n[Response]\n{answer}\n\nIs the response a correct and complete answer to "
                "the question? Reply with one word: yes or no.")

_RATING = (re.compile(r"\[\[\s*(10|[1-9])(?:\.\d+)?\s*\]\]"),
           re.compile(r"(?:rating|score)\s*(?:is|of)?\s*[:=]?\s*\[?(10|[1-9])\b", re.I),
           re.compile(r"^\W*(10|[1-9])\s*(?:/\s*10)?\W*$"))
_YES_NO = re.compile(r"^\W*(yes|no|correct|incorrect)\b|\[\[\s*(yes|no)\s*\]\]", re.I)
_VERDICT = (re.compile(r"\[\[\s*([ABC])\s*\]\]"),
            re.compile(r"^\W*([ABC])\W*$"),
            re.compile(r"\bassistant\s+([AB])\s+is\s+better", re.I))


@dataclass(frozen=True)
class Grade:
    """A score in [0, 1] (NaN: the grader gave no verdict), who gave it, and the verdict as written."""

    score: float
    grader: str
    detail: str = ""


def parse_rating(text: str) -> int | None:
    """The 1-10 rating in a judge's reply (``[[N]]``, "Rating: N" or a bare number), else None."""
    for pattern in _RATING:
        m = pattern.search(text.strip())
        if m:
            return int(m.group(1))
    return None


def parse_yes_no(text: str) -> bool | None:
    """True for a reply opening with yes/correct (or ``[[yes]]``), False for no/incorrect, else None."""
    m = _YES_NO.search(text.strip())
    if not m:
        return None
    return (m.group(1) or m.group(2)).lower() in ("yes", "correct")


def parse_verdict(text: str) -> str | None:
    """``A``, ``B`` or ``C`` (tie) from a pairwise judge's reply, else None."""
    for pattern in _VERDICT:
        m = pattern.search(text.strip())
        if m:
            return m.group(1).upper()
    return None


class LabelFreeGrader(ABC):
    """Grades the replies of several pairs to one prompt, without a reference answer."""

    #: who grades, as stored in the records' ``grader`` column
    name: str = ""

    @abstractmethod
    async def grade(self, question: str, responses: Mapping[Pair, str]) -> dict[Pair, Grade]:
        """One grade per pair; an empty reply (a failed run) scores 0 without asking anyone."""

    async def aclose(self) -> None:
        """Release the judge's connections."""

    def _empty(self) -> Grade:
        return Grade(0.0, self.name, "empty response")


class _JudgeBase(LabelFreeGrader):
    def __init__(self, model: ChatModel, label: str, max_tokens: int = 16) -> None:
        self.model = model
        self.params = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
        self.name = label

    async def _ask(self, system: str, user: str) -> str:
        completion = await self.model.chat([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                           self.params)
        return completion.text

    async def _ask_user(self, user: str) -> str:
        return (await self.model.chat([{"role": "user", "content": user}], self.params)).text

    async def aclose(self) -> None:
        await self.model.aclose()


class PointwiseJudge(_JudgeBase):
    """An LLM grades each reply alone: ``rubric="rating"`` on the MT-Bench 1-10 scale, score (rating - 1) / 9;
    ``rubric="verdict"`` a yes/no correctness verdict, score 1 or 0."""

    RUBRICS = ("rating", "verdict")

    def __init__(self, model: ChatModel, label: str | None = None, max_tokens: int = 16, rubric: str = "rating") -> None:
        if rubric not in self.RUBRICS:
            raise AtlasError(f"judge rubric must be one of {', '.join(self.RUBRICS)}, got '{rubric}'")
        kind = "judge" if rubric == "rating" else "judge-verdict"
        super().__init__(model, label or f"{kind}:{model.name}", max_tokens)
        self.rubric = rubric

    async def grade_one(self, question: str, response: str) -> Grade:
        if not response.strip():
            return self._empty()
        if self.rubric == "verdict":
            reply = await self._ask_user(VERDICT_USER.format(question=question, answer=response))
            ok = parse_yes_no(reply)
            return Grade(math.nan if ok is None else float(ok), self.name, reply.strip()[:200])
        reply = await self._ask(POINTWISE_SYSTEM, POINTWISE_USER.format(question=question, answer=response))
        rating = parse_rating(reply)
        return Grade(math.nan if rating is None else (rating - 1) / 9, self.name, reply.strip()[:200])

    async def grade(self, question: str, responses: Mapping[Pair, str]) -> dict[Pair, Grade]:
        pairs = list(responses)
        grades = await asyncio.gather(*(self.grade_one(question, responses[p]) for p in pairs))
        return dict(zip(pairs, grades))


class PairwiseJudge(_JudgeBase):
    """An LLM compares every two replies, in both orders; a pair's score is its mean result against the others."""

    def __init__(self, model: ChatModel, label: str | None = None, max_tokens: int = 16) -> None:
        super().__init__(model, label or f"judge-pairwise:{model.name}", max_tokens)

    async def compare(self, question: str, first: str, second: str) -> tuple[float | None, str]:
        """``first``'s result against ``second`` (1, 0.5, 0; None: no verdict either way), swap-checked."""
        ab, ba = await asyncio.gather(
            self._ask(PAIRWISE_SYSTEM, PAIRWISE_USER.format(question=question, a=first, b=second)),
            self._ask(PAIRWISE_SYSTEM, PAIRWISE_USER.format(question=question, a=second, b=first)))
        v1, v2 = parse_verdict(ab), parse_verdict(ba)
        as_first = {"A": 1.0, "B": 0.0, "C": 0.5}
        r1 = None if v1 is None else as_first[v1]
        r2 = None if v2 is None else 1.0 - as_first[v2]  # positions swapped back
        detail = f"{v1 or '?'}/{v2 or '?'}"
        if r1 is None and r2 is None:
            return None, detail
        if r1 is None or r2 is None or r1 != r2:
            return 0.5, detail  # a verdict that does not survive the swap is a tie (MT-Bench)
        return r1, detail

    async def grade(self, question: str, responses: Mapping[Pair, str]) -> dict[Pair, Grade]:
        live = [p for p, r in responses.items() if r.strip()]
        out = {p: self._empty() for p in responses if p not in live}
        if len(live) < 2:
            out.update({p: Grade(math.nan, self.name, "pairwise judging needs two replies") for p in live})
            return out
        matches = list(combinations(live, 2))
        results = await asyncio.gather(*(self.compare(question, responses[a], responses[b]) for a, b in matches))
        tally: dict[Pair, list[float]] = {p: [] for p in live}
        details: dict[Pair, list[str]] = {p: [] for p in live}
        for (a, b), (result, detail) in zip(matches, results):
            details[a].append(f"vs {_label(b)} {detail}")
            details[b].append(f"vs {_label(a)} {detail}")
            if result is not None:
                tally[a].append(result)
                tally[b].append(1.0 - result)
        for p in live:
            score = sum(tally[p]) / len(tally[p]) if tally[p] else math.nan
            out[p] = Grade(score, self.name, "; ".join(details[p])[:200])
        return out


def _label(pair: Pair) -> str:
    return f"{pair[0]}@@{pair[1]}"


class RewardModelGrader(LabelFreeGrader):
    """A process reward model scores each reply (the prm tool's ``/pooling`` scorer, steps aggregated)."""

    def __init__(self, client: PoolingRewardClient, how: str = "min") -> None:
        if how not in AGGREGATES:
            raise AtlasError(f"reward aggregate must be one of {', '.join(AGGREGATES)}, got '{how}'")
        self.client, self.how = client, how
        self.name = f"prm:{client.model}/{how}"

    async def grade(self, question: str, responses: Mapping[Pair, str]) -> dict[Pair, Grade]:
        live = [p for p, r in responses.items() if r.strip()]
        out = {p: self._empty() for p in responses if p not in live}
        if live:
            try:
                steps = await self.client.step_rewards(question, [responses[p] for p in live])
            except RewardModelError as err:
                raise AtlasError(f"grader {self.name}: {err}") from None
            for p, rewards in zip(live, steps):
                out[p] = Grade(min(1.0, max(0.0, aggregate(rewards, self.how))), self.name, f"{len(rewards)} steps")
        return out


class ReferenceAgreement(LabelFreeGrader):
    """1 when a reply's final answer equals the reference pair's (self-consistency's answer key), else 0.

    The reference pair itself scores 1 by construction; a reference that failed leaves every reply ungraded."""

    def __init__(self, reference: Pair) -> None:
        self.reference = reference
        self.name = f"reference:{_label(reference)}"

    async def grade(self, question: str, responses: Mapping[Pair, str]) -> dict[Pair, Grade]:
        if self.reference not in responses:
            raise AtlasError(f"grader {self.name}: the reference pair is not among the pairs run")
        ref = vote_key(extract_answer(responses[self.reference]))
        out: dict[Pair, Grade] = {}
        for p, text in responses.items():
            if not ref:
                out[p] = Grade(math.nan, self.name, "reference pair gave no answer")
            elif not text.strip():
                out[p] = self._empty()
            else:
                mine = vote_key(extract_answer(text))
                out[p] = Grade(float(mine == ref), self.name, f"{mine or '(none)'} vs {ref}")
        return out


def _judge_model(arg: str, pool: "Pool | None", kind: str) -> ChatModel:
    """A pool model by name (its own timeout, key and sampling), or ``MODEL_ID@URL`` on an OpenAI-compatible
    endpoint without a key."""
    model_id, sep, url = arg.rpartition("@")
    if sep and url.startswith(("http://", "https://")):
        from atlas_router.config import ModelSpec
        from atlas_router.models.factory import build_model

        if not model_id:
            raise AtlasError(f"grader '{kind}:{arg}': expected {kind}:MODEL_ID@http://HOST:PORT/v1")
        # generous timeout: a judge reads whole replies, often on a busy server; a pool model sets its own
        spec = ModelSpec(name=f"judge-{model_id}", backend="openai", endpoint=url, model_id=model_id,
                         timeout_s=JUDGE_TIMEOUT_S)
        return build_model(spec, pool.cache if pool is not None else None)
    if pool is None:
        raise AtlasError(f"grader '{kind}:{arg}' names a pool model, but no pool was given")
    return pool.model(arg)


GRADER_KINDS = ("judge", "judge-verdict", "judge-pairwise", "prm", "reference")


def build_label_free_grader(spec: str, pool: "Pool | None" = None) -> LabelFreeGrader:
    """The grader a spec names (see the module doc); bad specs raise a one-line AtlasError."""
    kind, sep, arg = spec.strip().partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in GRADER_KINDS or not sep or not arg:
        raise AtlasError(f"unknown grader '{spec}'; use judge:MODEL[@URL], judge-verdict:MODEL[@URL], "
                         "judge-pairwise:MODEL[@URL], "
                         "prm:MODEL_ID@URL or reference:MODEL@@TOOL")
    if kind == "judge":
        model = _judge_model(arg, pool, kind)
        return PointwiseJudge(model, f"judge:{arg}")
    if kind == "judge-verdict":
        model = _judge_model(arg, pool, kind)
        return PointwiseJudge(model, f"judge-verdict:{arg}", rubric="verdict")
    if kind == "judge-pairwise":
        model = _judge_model(arg, pool, kind)
        return PairwiseJudge(model, f"judge-pairwise:{arg}")
    if kind == "prm":
        model_id, sep, url = arg.rpartition("@")
        if not sep or not model_id or not url.startswith(("http://", "https://")):
            raise AtlasError(f"grader '{spec}': expected prm:MODEL_ID@http://HOST:PORT")
        return RewardModelGrader(PoolingRewardClient(url, model_id))
    model, sep, tool = arg.partition("@@")
    if not sep or not model or not tool:
        raise AtlasError(f"grader '{spec}': expected reference:MODEL@@TOOL")
    if pool is not None:
        pool.config.model(model)  # unknown names fail before any work
        pool.config.tool(tool)
    return ReferenceAgreement((model, tool))


def grade_all(grader: LabelFreeGrader, items: list[tuple[str, Mapping[Pair, str]]], concurrency: int = 4,
              on_done: Callable[[], None] | None = None) -> list[dict[Pair, Grade]]:
    """Grade many prompts' replies from synchronous code (benchmarks, the agreement report)."""

    async def go() -> list[dict[Pair, Grade]]:
        sem = asyncio.Semaphore(concurrency)

        async def one(q: str, r: Mapping[Pair, str]) -> dict[Pair, Grade]:
            async with sem:
                out = await grader.grade(q, r)
            if on_done is not None:
                on_done()
            return out

        try:
            return list(await asyncio.gather(*(one(q, r) for q, r in items)))
        finally:
            await grader.aclose()

    return asyncio.run(go())


__all__ = ["GRADER_KINDS", "Grade", "LabelFreeGrader", "PairwiseJudge", "PointwiseJudge", "ReferenceAgreement",
           "RewardModelGrader", "build_label_free_grader", "grade_all", "parse_rating", "parse_verdict",
           "parse_yes_no"]
