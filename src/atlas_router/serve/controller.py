"""The one answer path of the gateway and ``atlas ask``: route a request, execute the chosen pair, fall back,
keep breakers.

One object owns the live pool (swapped whole on reload), the routers, a circuit breaker per upstream
model and the metrics. A routed request is answered by the first pair of the router's ranking that
passes the request's constraints (allowed pairs, cost budget), whose model's circuit is not open, and
that runs without error within its time limit; every attempt is reported back. A pool model name passes
the conversation straight to that model.

The chosen pair receives the conversation (its own system prompt in front), not a transcript. Request
features beyond sampling (tools, response_format, n, logprobs, penalties) restrict routing to pairs whose
tool lets the model answer directly and whose model serves them; when no pair or the named model cannot,
the answer is a 400 naming the parameter. A streamed request from a direct pair streams the model's tokens
as they come; the fallback to the next pair happens before the first token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from atlas_router.core.images import ImageInput, content_text
from atlas_router.config import PoolConfig
from atlas_router.errors import AtlasError
from atlas_router.execution.runner import (PairFailed, completion_record, last_user, pair_messages, run_pair,
                                           stream_pair, upstream_fault, user_content)
from atlas_router.models.base import ChatModel, Completion, Delta, SamplingParams
from atlas_router.models.openai_http import UpstreamRefused
from atlas_router.pool.pool import Pool
from atlas_router.serve.breaker import BreakerBoard
from atlas_router.serve.latency import LatencyBook, within_budget
from atlas_router.serve.metrics import GatewayMetrics
from atlas_router.serve.openai_schema import ChatRequest
from atlas_router.serve.policy import PolicyPath
from atlas_router.serve.registry import Pair, RouterRegistry, RouteResult, close_routers, format_pair
from atlas_router.serve.settings import GatewaySettings
from atlas_router.serve.answer import Answer, Attempt, open_first
from atlas_router.serve.request import GatewayError, Overrides, images_of, question_of, sampling_of


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


class _PoolUse:
    """The live pool for the body of an ``async with``: a user of its lease until the body ends. A class
    rather than a generator-based context manager: it is entered on every request."""

    __slots__ = ("lease",)

    def __init__(self, lease: _PoolLease) -> None:
        self.lease = lease

    async def __aenter__(self) -> Pool:
        self.lease.users += 1
        return self.lease.pool

    async def __aexit__(self, *exc: object) -> None:
        self.lease.users -= 1
        await self.lease.maybe_close()


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
                                     on_change=lambda m, s: metrics.child(metrics.circuit, m).set(int(s)))
        for spec in pool.config.models:
            self.breakers[spec.name]
        self._reload_lock = asyncio.Lock()
        self.latency = LatencyBook()  # measured seconds per pair, for max_latency_s

    @property
    def pool(self) -> Pool:
        return self._lease.pool

    def _use_pool(self) -> "_PoolUse":
        return _PoolUse(self._lease)

    def model_names(self) -> list[str]:
        return [m.name for m in self.pool.config.models]

    def kind_of(self, requested: str) -> str:
        """``routed`` for router names, ``passthrough`` for pool models, ``unknown`` otherwise."""
        if self.routers.is_router_name(requested):
            return "routed"
        return "passthrough" if requested in self.model_names() else "unknown"

    async def complete(self, req: ChatRequest, overrides: Overrides,
                       stack: contextlib.AsyncExitStack | None = None) -> Answer:
        """Answer one chat request, routed or passed through; GatewayError when it cannot be answered.

        A streamed answer may still be generating when this returns (``Answer.live``); ``stack`` then
        holds the pool until the caller closes it after the last piece."""
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        params = sampling_of(req)
        if req.stream and params.n > 1:
            raise GatewayError(400, "n > 1 cannot be streamed by this gateway; ask for n = 1 or stream = false",
                               code="unsupported_parameter", param="n")
        own = stack is None
        stack = stack or contextlib.AsyncExitStack()
        try:
            pool = await stack.enter_async_context(self._use_pool())
            if self.routers.is_router_name(req.model):
                return await self._routed(pool, req, messages, params, overrides)
            if req.model in (m.name for m in pool.config.models):
                return await self._passthrough(pool, req, messages, params)
        finally:
            if own:
                await stack.aclose()
        known = ", ".join(self.routers.names() + self.model_names())
        raise GatewayError(404, f"unknown model '{req.model}'; this gateway serves: {known}", code="model_not_found",
                           param="model")

    async def _call(self, model: ChatModel, messages: list[dict[str, Any]], params: SamplingParams, stream: bool,
                    limit: float) -> tuple[Completion | None, Delta | None, AsyncIterator[Delta] | None]:
        """One model call within ``limit`` seconds: (completion, None, None), or for a stream (None, first
        delta, the rest) when the first delta is not already the whole reply."""
        async with asyncio.timeout(limit):
            if not stream:
                return await model.chat(messages, params), None, None
            return await open_first(model.stream(messages, params))

    async def _passthrough(self, pool: Pool, req: ChatRequest, messages: list[dict[str, Any]],
                           params: SamplingParams) -> Answer:
        model = pool.model(req.model)
        missing = model.unsupported(params)
        if missing:
            raise GatewayError(400, f"model '{req.model}' does not support {', '.join(missing)}",
                               code="unsupported_parameter", param=missing[0])
        breaker = self.breakers[req.model]
        if not breaker.allow():
            wait = breaker.retry_after_s()
            raise GatewayError(503, f"model '{req.model}' is failing (circuit open); retry in {wait:.0f}s",
                               kind="upstream_unavailable", code="circuit_open", retry_after_s=max(1.0, wait))
        start = time.perf_counter()
        verdict = None  # every outcome gives the breaker a verdict or its trial slot back (finally)
        try:
            c, first, rest = await self._call(model, messages, params, req.stream, self.settings.attempt_timeout_s)
            verdict = "ok"
        except UpstreamRefused as err:  # the upstream is up and says the request is wrong
            verdict = "ok"
            raise GatewayError(400, f"upstream refused the request: {err}", code="upstream_refused") from None
        except (AtlasError, TimeoutError) as err:
            verdict = "failed"
            self.metrics.child(self.metrics.upstream_failures, req.model).inc()
            why = str(err) if isinstance(err, AtlasError) else f"timeout after {self.settings.attempt_timeout_s:g}s"
            raise GatewayError(502, why, kind="upstream_error", code="upstream_failed") from None
        finally:
            {"ok": breaker.success, "failed": breaker.failure}.get(verdict or "", breaker.release)()
        latency = time.perf_counter() - start
        answer = Answer(req.model, "", req.model, None, None, 0, 0, 0.0, latency,
                        attempts=[Attempt(req.model, "", "ok", None, round(latency, 4))])
        answer.adopt(model, c, first, rest)
        return answer

    async def _routed(self, pool: Pool, req: ChatRequest, messages: list[dict[str, Any]], params: SamplingParams,
                      ov: Overrides) -> Answer:
        question = question_of(messages)
        images: list[ImageInput] = []
        routed_text = question
        if any(isinstance(m.get("content"), list) for m in messages):
            images = await asyncio.to_thread(images_of, messages)  # refused images fail here, before any work
            if images:  # the router sees the question plus the images' descriptions, as atlas ask does
                from atlas_router.tools.multimodal.describe import routing_text

                routed_text = await asyncio.to_thread(routing_text, question, images)
        resolved = self.routers.resolve(req.model)
        if resolved is None:
            raise GatewayError(404, f"router '{req.model}' is not loaded in this gateway; loaded: "
                               f"{', '.join(self.routers.names())}", code="model_not_found")
        router_name, router = resolved
        policy = router.policy if isinstance(router, PolicyPath) else None  # atlas-rl, atlas-hybrid: may answer first
        ranker = router if policy is None else (router.ranker or self.routers.default)
        batcher = self.routers.batcher(ranker)
        start = time.perf_counter()
        try:
            routed = await batcher.route(routed_text, ov.alpha, ov.tolerance)
        except Exception as err:  # a router failure must not take the request down: use the pool order
            self.metrics.child(self.metrics.errors, "router_error").inc()
            routed = RouteResult([], None, {"router_error": f"{type(err).__name__}: {err}"})
        first: list[Attempt] = []
        features = params.features()
        if policy is not None:
            reason = router.rl_reason(routed) if not features and len(messages) == 1 else None
            routed.explanation = {**routed.explanation, "path": "rl" if reason else "cluster", "path_reason": reason}
            if reason:
                answer = await self._policy_answer(pool, policy, routed_text, req, router_name, routed, ov, start)
                if isinstance(answer, Answer):
                    return answer
                first.append(answer)
        prompt_chars = sum(len(content_text(m.get("content") or "")) for m in messages)
        ranking = self._candidates(pool.config, routed, ov, prompt_chars, params.max_tokens)
        if ov.max_latency_s is not None:
            ranking, note = within_budget(ranking, self.latency, ov.max_latency_s)
            routed.explanation = {**routed.explanation, "latency": note}
            if not ranking:
                raise GatewayError(400, f"no allowed pair's measured latency fits max_latency_s {ov.max_latency_s:g}",
                                   code="over_latency_budget", param="max_latency_s")
        if features:
            ranking = self._serving(pool, ranking, params)
        if req.stream:
            ranking, note = self._streamable(pool, ranking)
            if note:
                routed.explanation = {**routed.explanation, "stream": note}
        answer = Answer(req.model, "", "", None, router_name, 0, 0, 0.0, 0.0, explanation=routed.explanation,
                        overrides=ov, alpha_applied=batcher.alpha_supported if ov.alpha is not None else None)
        answer.question = routed_text
        attempts = await self._execute(pool, ranking, question, messages, params, req.stream, answer, images)
        answer.attempts = first + attempts
        if not answer.model:
            self._raise_unanswered(answer.attempts)
        pair = (answer.model, answer.tool or "")
        answer.latency_s = time.perf_counter() - start
        answer.utility = routed.utility if routed.ranking[:1] == [pair] else None
        answer.estimated_cost = estimate_cost(pool.config, pair, prompt_chars, params.max_tokens)
        return answer

    def _serving(self, pool: Pool, ranking: list[Pair], params: SamplingParams) -> list[Pair]:
        """The pairs that can serve the request's features: tools that let the model answer directly
        (a tool loop or best-of-n would swallow tool calls, formats and choices) and models that serve
        every feature; a 400 naming the features when none can."""
        features = params.features()
        kept = [p for p in ranking if pool.tool(p[1]).mode == "direct" and not pool.model(p[0]).unsupported(params)]
        if not kept:
            raise GatewayError(400, f"no pair of this gateway's pool serves {', '.join(features)} (none of its "
                               "models supports it with a direct tool); remove it or ask a model that does",
                               code="unsupported_parameter", param=features[0])
        return kept

    @staticmethod
    def _streamable(pool: Pool, ranking: list[Pair]) -> tuple[list[Pair], str | None]:
        """For a streamed request, the pairs that can stream (best-of-n answers only once every sample is
        done, so the first text would come at the very end); all of them when none can."""
        kept = [p for p in ranking if pool.tool(p[1]).mode != "best_of_n"]
        if not kept or len(kept) == len(ranking):
            return ranking, None
        skipped = [format_pair(p) for p in ranking if p not in set(kept)]
        return kept, f"streamed: skipped {', '.join(skipped)} (best-of-n answers only when every sample is done)"

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
            self.metrics.child(self.metrics.errors, "policy_error").inc()
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
                    max_tokens: int | None) -> list[Pair]:
        """The pairs to try, best first: the router's ranking, then the rest of the pool in its order
        (pairs the pool no longer has are dropped), filtered by the allowed pairs and the cost budget (the
        pairs' costs are estimated only when there is a budget)."""
        pool_pairs = cfg.pairs()
        in_pool = set(pool_pairs)
        ranking = list(dict.fromkeys(p for p in routed.ranking if p in in_pool))
        ranking += [p for p in pool_pairs if p not in set(ranking)]
        if ov.allowed_pairs is not None:
            unknown = sorted(format_pair(p) for p in ov.allowed_pairs if p not in in_pool)
            if unknown:
                raise GatewayError(400, f"allowed_pairs not in the pool: {', '.join(unknown)}", code="unknown_pair")
            ranking = [p for p in ranking if p in ov.allowed_pairs]
        if ov.max_cost is not None:
            estimates = {p: estimate_cost(cfg, p, prompt_chars, max_tokens) for p in ranking}
            ranking = [p for p in ranking if estimates[p] <= ov.max_cost]
            if not ranking:
                cheapest = min(estimates.values(), default=0.0)
                raise GatewayError(400, f"no allowed pair fits max_cost {ov.max_cost:g} (cheapest estimate "
                                   f"{cheapest:.3g})", code="over_budget")
        return ranking

    async def _execute(self, pool: Pool, ranking: list[Pair], question: str, messages: list[dict[str, Any]],
                       params: SamplingParams, stream: bool, answer: Answer,
                       images: list[ImageInput] | None = None) -> list[Attempt]:
        """Run pairs in ranking order until one answers (filling ``answer``): at most ``max_attempts``
        runs within the request deadline, skipping models whose circuit is open. After a model fails, its
        other pairs wait until every other model was tried. Every run ends with a breaker verdict or the
        breaker's trial slot given back, whatever happens (cancellation included)."""
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
            verdict = None
            try:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                ran += 1
                if ran > 1:
                    self.metrics.fallbacks.inc()
                t0 = time.perf_counter()
                limit = min(self.settings.attempt_timeout_s, remaining)
                error, outcome, verdict = await self._attempt(pool, pair, question, messages, params, stream, limit,
                                                              answer, images or [])
                latency = round(time.perf_counter() - t0, 4)
                attempts.append(Attempt(model, tool, outcome, error, latency))
                if outcome == "ok":
                    answer.model, answer.tool = model, tool
                    self.latency.observe(pair, latency)
                    return attempts
                if verdict == "failed":
                    failed_models.add(model)
                    self.metrics.child(self.metrics.upstream_failures, model).inc()
            finally:
                {"ok": breaker.success, "failed": breaker.failure}.get(verdict or "", breaker.release)()
        return attempts

    async def _attempt(self, pool: Pool, pair: Pair, question: str, messages: list[dict[str, Any]],
                       params: SamplingParams, stream: bool, limit: float, answer: Answer,
                       images: list[ImageInput]) -> tuple[str | None, str, str | None]:
        """One pair's run: (error, outcome, breaker verdict). A direct pair is one model call on the
        conversation (streamed when asked); other tools run through ``run_pair``. The question's checked
        images replace its message's parts: image parts for a vision model, descriptions for a text-only one."""
        model_name, tool_name = pair
        if pool.tool(tool_name).mode == "direct":
            chat_model = pool.model(model_name)
            turns = pair_messages(pool.tool(tool_name), messages)
            t0 = time.perf_counter()
            if images:
                try:
                    _, content = await asyncio.to_thread(user_content, question, images, chat_model.spec.vision)
                except AtlasError as err:  # describing the images failed, not the model: no verdict
                    return f"{type(err).__name__}: {err}", "failed", None
                asking = last_user(turns)
                turns[asking] = {**turns[asking], "content": content}
            try:
                c, first, rest = await self._call(chat_model, turns, params, stream, limit)
            except TimeoutError:
                return f"no answer within {limit:.3g}s", "timeout", "failed"
            except UpstreamRefused as err:
                return f"{type(err).__name__}: {err}", "failed", "ok"
            except AtlasError as err:
                return f"{type(err).__name__}: {err}", "failed", "failed"
            answer.adopt(chat_model, c, first, rest)
            if c is not None:
                answer.pair_record = functools.partial(completion_record, chat_model, tool_name, question, turns, c,
                                                       time.perf_counter() - t0)
            return None, "ok", "ok"
        if stream and pool.tool(tool_name).mode == "loop":  # the answer streams as it is written, after any calls
            try:
                async with asyncio.timeout(limit):
                    c, first, rest = await open_first(stream_pair(pool, model_name, tool_name, question,
                                                                  params=params, conversation=messages,
                                                                  images=images or None))
            except TimeoutError:
                return f"no answer within {limit:.3g}s", "timeout", "failed"
            except PairFailed as err:
                return str(err), "failed", "failed" if upstream_fault(str(err)) else None
            except AtlasError as err:  # the pair cannot be built (e.g. a tool's dependency is missing): no verdict
                return str(err), "failed", None
            answer.adopt(pool.model(model_name), c, first, rest)
            return None, "ok", "ok"
        try:
            async with asyncio.timeout(limit):
                record = await run_pair(pool, model_name, tool_name, question, params=params, conversation=messages,
                                        images=images or None)
        except TimeoutError:
            return f"no answer within {limit:.3g}s", "timeout", "failed"
        except AtlasError as err:  # the pair cannot be built (e.g. a tool's dependency is missing): no verdict
            return str(err), "failed", None
        if record.error:
            return record.error, "failed", "failed" if upstream_fault(record.error) else None
        answer.pair_record = lambda: record
        answer.text, answer.finish_reason = record.response, record.finish_reason or "stop"
        answer.input_tokens, answer.output_tokens, answer.cost = record.input_tokens, record.output_tokens, record.cost
        return None, "ok", "ok"

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
            self.breakers.reset()  # a reload is the operator's fresh start: every circuit closes
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
