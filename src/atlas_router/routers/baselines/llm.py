"""LLM routers: a pool model reads the pair descriptions (zero-shot) plus a few solved examples
(few-shot) and names the pair to use.

The reply is parsed tolerantly: an option number ("3", "Option 3", "[3]"), else the longest pair
label or model name it mentions. An unparsable reply (or a failed call) falls back to the best
single pair on the training records, and the explanation says so. Descriptions come from the pool
config when it describes the pair's model/tool, plus the pair's training accuracy and relative cost.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import numpy as np

from atlas_router.config import PoolConfig
from atlas_router.errors import AtlasError
from atlas_router.models.base import ChatModel, SamplingParams
from atlas_router.routers.base import Decision, Queries, Router
from atlas_router.routers.table import QueryTable, pair_label
from atlas_router.routers.utility import best_pairs, utility

MAX_QUESTION_CHARS = 1500


class ZeroShotLLMRouter(Router):
    """Ask a chat model to pick a pair from their descriptions."""

    name = "zero-shot"
    needs_text = True
    uses_encoder = False
    n_examples_default = 0

    def __init__(self, model: ChatModel | None = None, alpha: float = 0.5, seed: int = 0,
                 pool: PoolConfig | None = None, n_examples: int | None = None, max_tokens: int = 16,
                 concurrency: int = 8) -> None:
        super().__init__(alpha=alpha, seed=seed)
        self.model = model
        self.pool = pool
        self.n_examples = self.n_examples_default if n_examples is None else n_examples
        self.max_tokens = max_tokens
        self.concurrency = concurrency

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["model"] = None  # a live client is not saved; give one with set_model() after loading
        return state

    def set_model(self, model: ChatModel) -> "ZeroShotLLMRouter":
        self.model = model
        return self

    # -- fit --------------------------------------------------------------------------------------
    def _fit(self, table: QueryTable) -> None:
        acc = np.where(np.isnan(self.pair_accuracy_), -np.inf, self.pair_accuracy_)
        self.fallback_ = int(best_pairs(acc[None, :], self.pair_cost_)[0])
        self.routable_ = [j for j in range(len(self.pairs_)) if not np.isnan(self.pair_accuracy_[j])]
        self.descriptions_ = [self._describe(j) for j in self.routable_]
        self.examples_ = self._pick_examples(table) if self.n_examples else []

    def _describe(self, j: int) -> str:
        model, tool = self.pairs_[j]
        parts = []
        if self.pool is not None:
            for m in self.pool.models:
                if m.name == model and m.description:
                    parts.append(m.description.strip())
            for t in self.pool.tools:
                if t.name == tool and t.description and tool != "none":
                    parts.append(f"tool: {t.description.strip()}")
        rel = self.pair_cost_[j] / self.cost_scale_
        parts.append(f"accuracy on past questions {self.pair_accuracy_[j]:.0%}, relative cost {rel:.2f}")
        return f"{pair_label((model, tool))}: " + "; ".join(parts)

    def _pick_examples(self, table: QueryTable) -> list[tuple[str, int]]:
        """Up to ``n_examples`` training questions (spread over benchmarks) with their best pair."""
        rng = np.random.default_rng(self.seed)
        scores = np.where(np.isnan(table.scores), -np.inf, table.scores)
        informative = np.flatnonzero(np.isfinite(scores).any(1) & (scores.max(1) > np.where(
            np.isfinite(scores), scores, np.inf).min(1)))
        if not len(informative):
            return []
        by_bench: dict[str, list[int]] = {}
        for i in rng.permutation(informative):
            by_bench.setdefault(str(table.benchmarks[i]), []).append(int(i))
        picked: list[int] = []
        while len(picked) < self.n_examples and any(by_bench.values()):
            for rows in by_bench.values():
                if rows and len(picked) < self.n_examples:
                    picked.append(rows.pop())
        routable = set(self.routable_)
        out = []
        for i in picked:
            u = utility(table.scores[i], self.pair_cost_, self.alpha, self.cost_scale_)
            u = np.where([j in routable for j in range(len(u))], u, -np.inf)
            out.append((table.queries[i][:MAX_QUESTION_CHARS], int(best_pairs(u[None, :], self.pair_cost_)[0])))
        return out

    # -- prompting --------------------------------------------------------------------------------
    def messages(self, question: str, alpha: float) -> list[dict[str, str]]:
        options = "\n".join(f"{n}. {d}" for n, d in enumerate(self.descriptions_, start=1))
        number = {j: n for n, j in enumerate(self.routable_, start=1)}
        goal = "the most accurate option" if alpha == 0 else (
            f"the best trade-off of accuracy and cost (cost weight {alpha:g} of 1)")
        system = (f"You route questions to one of these model/tool options and pick {goal}.\n"
                  f"{options}\nReply with the option number only.")
        msgs = [{"role": "system", "content": system}]
        for q, j in self.examples_:
            msgs.append({"role": "user", "content": f"Question: {q}"})
            msgs.append({"role": "assistant", "content": str(number[j])})
        msgs.append({"role": "user", "content": f"Question: {question[:MAX_QUESTION_CHARS]}"})
        return msgs

    def parse(self, reply: str) -> int | None:
        """Pair index named by a reply, or None."""
        text = reply.strip()
        for m in re.finditer(r"\d+", text):
            n = int(m.group())
            if 1 <= n <= len(self.routable_):
                return self.routable_[n - 1]
        low = text.lower()
        named = []
        for j in self.routable_:
            for name in (pair_label(self.pairs_[j]), self.pairs_[j][0]):
                if name.lower() in low:
                    named.append((len(name), j))
        return max(named)[1] if named else None

    # -- routing ----------------------------------------------------------------------------------
    def _route(self, queries: Queries, alpha: float) -> list[Decision]:
        if self.model is None:
            raise AtlasError(f"router '{self.name}' needs a chat model (set_model) to route")
        async def run_and_close() -> list[Decision]:
            try:
                return await self.aroute(list(queries), alpha)
            finally:  # this event loop ends here: its connections must not outlive it
                await self.model.aclose()

        return _run_sync(run_and_close())

    async def aroute(self, queries: list[str], alpha: float | None = None) -> list[Decision]:
        a = self.alpha if alpha is None else alpha
        sem = asyncio.Semaphore(max(1, int(self.concurrency)))

        async def one(q: str) -> Decision:
            async with sem:
                try:
                    reply = (await self.model.chat(self.messages(q, a),
                                                   SamplingParams(temperature=0.0, max_tokens=self.max_tokens))).text
                except AtlasError as err:
                    return self._decide(None, f"model call failed: {err}", "", a)
            j = self.parse(reply)
            return self._decide(j, None if j is not None else "unparsable reply", reply, a)

        return list(await asyncio.gather(*(one(q) for q in queries)))

    def _decide(self, j: int | None, problem: str | None, reply: str, alpha: float) -> Decision:
        fallback = None
        if j is None:
            j = self.fallback_
            fallback = f"{problem}: best single pair {pair_label(self.pairs_[j])}"
        u = float(utility(self.pair_accuracy_[j], self.pair_cost_[j], alpha, self.cost_scale_))
        expl = {"router": self.name, "reply": reply[:200], "fallback": fallback, "examples": len(self.examples_),
                "llm": getattr(self.model, "name", None)}
        return Decision(*self.pairs_[j], u, expl)


class FewShotLLMRouter(ZeroShotLLMRouter):
    """Zero-shot plus a few training questions shown with the pair that did best on them."""

    name = "few-shot"
    n_examples_default = 6


def _run_sync(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
