"""The gateway's controller: route a request, execute the chosen pair, fall back, keep breakers.

One object owns the live pool (swapped whole on reload), the routers, a circuit breaker per upstream
model and the metrics. A routed request is answered by the first pair of the router's ranking that
passes the request's constraints (allowed pairs, cost budget), whose model's circuit is not open, and
that runs without error within its time limit; every attempt is reported back. A pool model name passes
the conversation straight to that model.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from atlas_router.config import PoolConfig
from atlas_router.errors import AtlasError
from atlas_router.execution.record import PairRecord
from atlas_router.execution.runner import run_pair
from atlas_router.pool.models.base import SamplingParams
from atlas_router.pool.pool import Pool
from atlas_router.serve.breaker import BreakerBoard
from atlas_router.serve.metrics import GatewayMetrics
from atlas_router.serve.openai_schema import ChatRequest
from atlas_router.serve.registry import Pair, RouterRegistry, RouteResult, close_routers, format_pair, parse_pair
from atlas_router.serve.settings import GatewaySettings


class GatewayError(Exception):
    """A request the gateway cannot answer: HTTP status, OpenAI error type and code, optional Retry-After."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 retry_after_s: float | None = None, attempts: list["Attempt"] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code
        self.retry_after_s = retry_after_s
        self.attempts = attempts or []


@dataclass(frozen=True)
class Overrides:
    """Per-request routing knobs: the cost/quality trade-off, a cost budget, the pairs allowed."""

    alpha: float | None = None
    max_cost: float | None = None
    allowed_pairs: frozenset[Pair] | None = None

    @classmethod
    def parse(cls, body: Any, headers: dict[str, str]) -> "Overrides":
        """From the body's ``atlas`` object and ``x-atlas-alpha``/``-max-cost``/``-allowed-pairs`` headers
        (the body wins). Bad values raise GatewayError 400."""
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise GatewayError(400, "'atlas' must be an object: {alpha, max_cost, allowed_pairs}", code="bad_atlas_field")
        unknown = set(body) - {"alpha", "max_cost", "allowed_pairs"}
        if unknown:
            raise GatewayError(400, f"unknown 'atlas' field(s): {', '.join(sorted(unknown))}", code="bad_atlas_field")
        alpha = body.get("alpha", headers.get("x-atlas-alpha"))
        max_cost = body.get("max_cost", headers.get("x-atlas-max-cost"))
        allowed = body.get("allowed_pairs")
        if allowed is None and headers.get("x-atlas-allowed-pairs"):
            allowed = [p.strip() for p in headers["x-atlas-allowed-pairs"].split(",") if p.strip()]
        alpha_value = _number("alpha", alpha)
        if alpha_value is not None and alpha_value > 1:
            raise GatewayError(400, f"atlas alpha must lie in [0, 1] (0: most accurate, 1: cheapest), got {alpha_value:g}",
                               code="bad_atlas_field")
        return cls(alpha_value, _number("max_cost", max_cost), _pairs(allowed))


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GatewayError(400, f"atlas {name} must be a number, got {value!r}", code="bad_atlas_field") from None
    if not (number >= 0 and number != float("inf")):
        raise GatewayError(400, f"atlas {name} must be a finite number >= 0", code="bad_atlas_field")
    return number


def _pairs(value: Any) -> frozenset[Pair] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise GatewayError(400, "atlas allowed_pairs must be a non-empty list of 'model@@tool'", code="bad_atlas_field")
    try:
        return frozenset(parse_pair(p) for p in value)
    except ValueError as err:
        raise GatewayError(400, f"atlas allowed_pairs: {err}", code="bad_atlas_field") from None


@dataclass
class Attempt:
    """One pair tried (or skipped) for a request."""

    model: str
    tool: str
    outcome: str  # ok | failed | timeout | skipped
    error: str | None = None
    latency_s: float = 0.0


@dataclass
class Answer:
    """What the gateway sends back: the final text, the pair that produced it, and how it was chosen."""

    requested: str
    text: str
    model: str
    tool: str | None
    router: str | None
    input_tokens: int
    output_tokens: int
    cost: float
    latency_s: float
    finish_reason: str | None = "stop"
    utility: float | None = None
    explanation: dict[str, Any] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    estimated_cost: float | None = None
    overrides: Overrides = Overrides()
    alpha_applied: bool | None = None

    def atlas_field(self) -> dict[str, Any]:
        """The ``atlas`` object of the response body: pair, cluster, cost and the attempts made."""
        out: dict[str, Any] = {
            "router": self.router,
            "model": self.model,
            "tool": self.tool,
            "pair": format_pair((self.model, self.tool)) if self.tool else None,
            "cost": self.cost,
            "latency_s": round(self.latency_s, 4),
            "attempts": [asdict(a) for a in self.attempts],
            "fallbacks": sum(1 for a in self.attempts if a.outcome != "ok"),
        }
        if self.router is not None:
            out.update(utility=self.utility, cluster=self.explanation.get("cluster"), explanation=self.explanation,
                       estimated_cost=self.estimated_cost, alpha=self.overrides.alpha, alpha_applied=self.alpha_applied,
                       max_cost=self.overrides.max_cost)
        return out

    def headers(self) -> dict[str, str]:
        h = {"x-atlas-model": self.model, "x-atlas-cost": f"{self.cost:.10g}",
             "x-atlas-attempts": str(len(self.attempts))}
        if self.tool:
            h["x-atlas-tool"] = self.tool
            h["x-atlas-pair"] = format_pair((self.model, self.tool))
        if self.router:
            h["x-atlas-router"] = self.router
        cluster = self.explanation.get("cluster")
        if cluster is not None:
            h["x-atlas-cluster"] = str(cluster)
        return h


def message_text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a content list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type", "text") == "text")


def question_of(messages: list[dict[str, Any]]) -> str:
    """The routed question: the last user message; earlier turns (and a system message) go before it as
    context, because a pair runs with its own system prompt."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None:
        raise GatewayError(400, "the conversation has no user message to route", code="no_user_message")
    question = message_text(messages[last].get("content")).strip()
    if not question:
        raise GatewayError(400, "the last user message is empty", code="empty_question")
    context = [m for i, m in enumerate(messages) if i != last and message_text(m.get("content")).strip()]
    if not context:
        return question
    lines = [f"{m.get('role', 'user')}: {message_text(m.get('content')).strip()}" for m in context]
    return "Conversation so far:\n" + "\n".join(lines) + f"\n\nQuestion: {question}"


def sampling_of(req: ChatRequest) -> SamplingParams:
    return SamplingParams(temperature=req.temperature, top_p=req.top_p,
                          max_tokens=req.max_completion_tokens or req.max_tokens, seed=req.seed, stop=req.stop_list())


def estimate_cost(config: PoolConfig, pair: Pair, prompt_chars: int, max_tokens: int | None) -> float:
    """An upper-end guess of a pair's cost before running it, for the cost budget: ~4 characters a token
    plus the system prompt in, the token limit out, times the calls the tool usually makes."""
    model, tool = config.model(pair[0]), config.tool(pair[1])
    tokens_in = prompt_chars / 4 + 150
    tokens_out = max_tokens or model.sampling.max_tokens
    calls = {"none": 1}.get(tool.kind, 2)
    if tool.kind == "prm":
        calls = int(tool.settings.get("n", 5))
    return calls * (tokens_in * model.price.input + tokens_out * model.price.output) / 1_000_000


class _PoolLease:
    """A pool plus how many requests use it, so a replaced pool is closed only once they finish."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.users = 0
        self.retired = False

    async def maybe_close(self) -> None:
        if self.retired and self.users == 0:
            await self.pool.aclose()


class Controller:
    """Routing, execution, fallback and breakers for one gateway."""

    def __init__(self, pool: Pool, routers: RouterRegistry, settings: GatewaySettings, metrics: GatewayMetrics,
                 pool_loader: Callable[[], Pool] | None = None) -> None:
        self._lease = _PoolLease(pool)
        self.routers = routers
        self.settings = settings
        self.metrics = metrics
        self.pool_loader = pool_loader or (lambda: Pool(pool.config))
        self.breakers = BreakerBoard(settings.breaker_failures, settings.breaker_cooldown_s,
                                     on_change=lambda m, s: metrics.circuit.labels(model=m).set(int(s)))
        for spec in pool.config.models:
            self.breakers[spec.name]
        self._reload_lock = asyncio.Lock()

    @property
    def pool(self) -> Pool:
        return self._lease.pool

    @contextlib.asynccontextmanager
    async def _use_pool(self) -> AsyncIterator[Pool]:
        lease = self._lease
        lease.users += 1
        try:
            yield lease.pool
        finally:
            lease.users -= 1
            await lease.maybe_close()

    def model_names(self) -> list[str]:
        return [m.name for m in self.pool.config.models]

    def kind_of(self, requested: str) -> str:
        """``routed`` for router names, ``passthrough`` for pool models, ``unknown`` otherwise."""
        if self.routers.is_router_name(requested):
            return "routed"
        return "passthrough" if requested in self.model_names() else "unknown"

    async def complete(self, req: ChatRequest, overrides: Overrides) -> Answer:
        """Answer one chat request, routed or passed through; GatewayError when it cannot be answered."""
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        async with self._use_pool() as pool:
            if self.routers.is_router_name(req.model):
                return await self._routed(pool, req, messages, overrides)
            if req.model in (m.name for m in pool.config.models):
                return await self._passthrough(pool, req, messages)
        known = ", ".join(self.routers.names() + self.model_names())
        raise GatewayError(404, f"unknown model '{req.model}'; this gateway serves: {known}", code="model_not_found")

    async def _passthrough(self, pool: Pool, req: ChatRequest, messages: list[dict[str, Any]]) -> Answer:
        breaker = self.breakers[req.model]
        if not breaker.allow():
            wait = breaker.retry_after_s()
            raise GatewayError(503, f"model '{req.model}' is failing (circuit open); retry in {wait:.0f}s",
                               kind="upstream_unavailable", code="circuit_open", retry_after_s=max(1.0, wait))
        model = pool.model(req.model)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.attempt_timeout_s):
                c = await model.chat(messages, sampling_of(req))
        except (AtlasError, TimeoutError) as err:
            breaker.failure()
            self.metrics.upstream_failures.labels(model=req.model).inc()
            why = str(err) if isinstance(err, AtlasError) else f"timeout after {self.settings.attempt_timeout_s:g}s"
            raise GatewayError(502, why, kind="upstream_error", code="upstream_failed") from None
        breaker.success()
        latency = time.perf_counter() - start
        return Answer(req.model, c.text, req.model, None, None, c.input_tokens, c.output_tokens,
                      model.cost(c.input_tokens, c.output_tokens), latency, c.finish_reason,
                      attempts=[Attempt(req.model, "", "ok", None, round(latency, 4))])

    async def _routed(self, pool: Pool, req: ChatRequest, messages: list[dict[str, Any]], ov: Overrides) -> Answer:
        question = question_of(messages)
        resolved = self.routers.resolve(req.model)
        if resolved is None:
            raise GatewayError(404, f"router '{req.model}' is not loaded in this gateway; loaded: "
                               f"{', '.join(self.routers.names())}", code="model_not_found")
        router_name, router = resolved
        policy = getattr(router, "policy", None)  # atlas-rl and atlas-hybrid: a policy may answer first
        ranker = router if policy is None else (getattr(router, "ranker", None) or self.routers.default)
        batcher = self.routers.batcher(ranker)
        start = time.perf_counter()
        try:
            routed = await batcher.route(question, ov.alpha)
        except Exception as err:  # a router failure must not take the request down: use the pool order
            self.metrics.errors.labels(kind="router_error").inc()
            routed = RouteResult([], None, {"router_error": f"{type(err).__name__}: {err}"})
        first: list[Attempt] = []
        if policy is not None:
            reason = router.rl_reason(routed)
            routed.explanation = {**routed.explanation, "path": "rl" if reason else "cluster", "path_reason": reason}
            if reason:
                answer = await self._policy_answer(pool, policy, question, req, router_name, routed, ov, start)
                if isinstance(answer, Answer):
                    return answer
                first.append(answer)
        max_tokens = req.max_completion_tokens or req.max_tokens
        ranking, estimates = self._candidates(pool.config, routed, ov, len(question), max_tokens)
        record, attempts = await self._execute(pool, ranking, question, sampling_of(req))
        attempts = first + attempts
        if record is None:
            self._raise_unanswered(attempts)
        pair = (record.model, record.tool)
        return Answer(req.model, record.response, record.model, record.tool, router_name, record.input_tokens,
                      record.output_tokens, record.cost, time.perf_counter() - start, "stop",
                      routed.utility if routed.ranking[:1] == [pair] else None, routed.explanation, attempts,
                      estimates[pair], ov, batcher.alpha_supported if ov.alpha is not None else None)

    async def _policy_answer(self, pool: Pool, policy: Any, question: str, req: ChatRequest, router_name: str,
                             routed: RouteResult, ov: Overrides, start: float) -> "Answer | Attempt":
        """The policy's answer, or the failed Attempt when it gave none (the caller falls back to pairs)."""
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.attempt_timeout_s):
                result = await policy.answer(question, pool.config)
        except TimeoutError:
            return Attempt("policy", "rl", "timeout", f"no answer within {self.settings.attempt_timeout_s:g}s",
                           round(time.perf_counter() - t0, 4))
        except Exception as err:  # a broken policy falls back to pairs, like a failed upstream
            self.metrics.errors.labels(kind="policy_error").inc()
            return Attempt("policy", "rl", "failed", f"{type(err).__name__}: {err}", round(time.perf_counter() - t0, 4))
        latency = round(time.perf_counter() - t0, 4)
        if not result.answer:
            return Attempt("policy", "rl", "failed", f"the policy gave no answer (finish: {result.finish})", latency)
        explanation = {**routed.explanation, "routes": result.routes, "finish": result.finish,
                       "format_problems": result.format_problems}
        return Answer(req.model, result.answer, "policy", None, router_name, 0, 0, result.cost,
                      time.perf_counter() - start, "stop", None, explanation,
                      [Attempt("policy", "rl", "ok", None, latency)], None, ov, None)

    def _candidates(self, cfg: PoolConfig, routed: RouteResult, ov: Overrides, prompt_chars: int,
                    max_tokens: int | None) -> tuple[list[Pair], dict[Pair, float]]:
        """The pairs to try, best first: the router's ranking, then the rest of the pool in its order
        (pairs the pool no longer has are dropped), filtered by the allowed pairs and the cost budget."""
        pool_pairs = cfg.pairs()
        in_pool = set(pool_pairs)
        ranking = list(dict.fromkeys(p for p in routed.ranking if p in in_pool))
        ranking += [p for p in pool_pairs if p not in set(ranking)]
        if ov.allowed_pairs is not None:
            unknown = sorted(format_pair(p) for p in ov.allowed_pairs if p not in in_pool)
            if unknown:
                raise GatewayError(400, f"allowed_pairs not in the pool: {', '.join(unknown)}", code="unknown_pair")
            ranking = [p for p in ranking if p in ov.allowed_pairs]
        estimates = {p: estimate_cost(cfg, p, prompt_chars, max_tokens) for p in ranking}
        if ov.max_cost is not None:
            ranking = [p for p in ranking if estimates[p] <= ov.max_cost]
            if not ranking:
                cheapest = min(estimates.values(), default=0.0)
                raise GatewayError(400, f"no allowed pair fits max_cost {ov.max_cost:g} (cheapest estimate "
                                   f"{cheapest:.3g})", code="over_budget")
        return ranking, estimates

    async def _execute(self, pool: Pool, ranking: list[Pair], question: str,
                       params: SamplingParams) -> tuple[PairRecord | None, list[Attempt]]:
        """Run pairs in ranking order until one answers: at most ``max_attempts`` runs within the request
        deadline, skipping models whose circuit is open. After a model fails, its other pairs wait until
        every other model was tried."""
        attempts: list[Attempt] = []
        deadline = time.perf_counter() + self.settings.request_timeout_s
        pending = list(ranking)
        failed_models: set[str] = set()
        ran = 0
        while pending and ran < self.settings.max_attempts:
            pair = next((p for p in pending if p[0] not in failed_models), pending[0])
            pending.remove(pair)
            model, tool = pair
            breaker = self.breakers[model]
            if not breaker.allow():
                attempts.append(Attempt(model, tool, "skipped", "circuit open"))
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                breaker.release()
                break
            ran += 1
            if ran > 1:
                self.metrics.fallbacks.inc()
            t0 = time.perf_counter()
            limit = min(self.settings.attempt_timeout_s, remaining)
            try:
                async with asyncio.timeout(limit):
                    record = await run_pair(pool, model, tool, question, params=params)
            except TimeoutError:
                record = None
                error, outcome, upstream_fault = f"no answer within {limit:.3g}s", "timeout", True
            except AtlasError as err:  # the pair cannot be built (e.g. a tool's dependency is missing)
                record = None
                error, outcome, upstream_fault = str(err), "failed", False
            else:
                error, outcome = record.error, "failed"
                upstream_fault = bool(error) and error.startswith(("BackendError", "TimeoutError"))
            latency = round(time.perf_counter() - t0, 4)
            if record is not None and not record.error:
                breaker.success()
                attempts.append(Attempt(model, tool, "ok", None, latency))
                return record, attempts
            if upstream_fault:
                failed_models.add(model)
                breaker.failure()
                self.metrics.upstream_failures.labels(model=model).inc()
            else:
                breaker.release()
            attempts.append(Attempt(model, tool, outcome, error, latency))
        return None, attempts

    def _raise_unanswered(self, attempts: list[Attempt]) -> None:
        if attempts and all(a.outcome == "skipped" for a in attempts):
            wait = min(self.breakers[a.model].retry_after_s() for a in attempts)
            raise GatewayError(503, "every candidate pair's model is failing (circuits open)",
                               kind="upstream_unavailable", code="circuit_open", retry_after_s=max(1.0, wait),
                               attempts=attempts)
        tried = "; ".join(f"{format_pair((a.model, a.tool))}: {a.outcome} ({a.error})" for a in attempts)
        raise GatewayError(502, f"no pair could answer: {tried or 'nothing tried'}", kind="upstream_error",
                           code="all_pairs_failed", attempts=attempts)

    async def reload(self) -> dict[str, Any]:
        """Load the pool again (from its file; a pool given as an object is rebuilt from its config) and swap it in; in-flight requests finish on the old pool, which is
        closed after them. Routers built from files are rebuilt. A bad file leaves everything as it was."""
        async with self._reload_lock:
            old = self._lease
            new_pool = await asyncio.to_thread(self.pool_loader)
            reloaded, retired = await asyncio.to_thread(self.routers.reload)
            self.routers.drop_batchers()
            if retired:  # after the requests already routed by them (a policy finishes its episode)
                asyncio.get_running_loop().run_in_executor(None, close_routers, retired)
            self._lease = _PoolLease(new_pool)
            for spec in new_pool.config.models:
                self.breakers[spec.name]
            old.retired = True
            await old.maybe_close()
            before = {m.name for m in old.pool.config.models} | {t.name for t in old.pool.config.tools}
            models = [m.name for m in new_pool.config.models]
            tools = [t.name for t in new_pool.config.tools]
            return {"models": models, "tools": tools, "routers": reloaded,
                    "added": sorted(set(models + tools) - before),
                    "removed": sorted(before - set(models + tools))}

    async def aclose(self) -> None:
        self.routers.drop_batchers()
        await asyncio.to_thread(close_routers, self.routers.routers())  # policies finish their episode first
        self._lease.retired = True
        await self._lease.maybe_close()
