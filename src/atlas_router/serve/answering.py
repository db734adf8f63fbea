"""One question answered in-process by the gateway's own path: ``atlas ask`` and ``api.answer`` use it.

There is one answer path: ``Controller.complete`` (serve/controller.py) routes (the registry's
``call_route`` at the operating point), lists the candidates (the router's ranking, then the rest of the
pool; allowed pairs, cost budget), runs them with fallback (at most ``max_attempts`` pairs, models whose
circuit is open skipped, breaker verdicts) and says what it tried. The gateway calls it for every
``POST /v1/chat/completions``; ``ask`` here builds the same Controller without HTTP (a RouterRegistry
holding the given router under its gateway name, default GatewaySettings, fresh GatewayMetrics), sends it
the chat request a client would send (the question, and its images as ``image_url`` parts) and, with a
records directory, writes the answer with the gateway's own ``RecordSink``. Same question, same router,
same operating point: same decision, whichever way it came in.

A named pair (``pair``) is the request's only allowed pair, so exactly that pair runs: no routing (the
registry holds no router, so nothing is ranked but the pool order) and no fallback to other pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from atlas_router.core.images import ImageInput, to_content_parts
from atlas_router.execution.record import PairRecord
from atlas_router.pool.pool import Pool
from atlas_router.serve.answer import Attempt
from atlas_router.serve.controller import Controller
from atlas_router.serve.request import GatewayError, Overrides
from atlas_router.serve.metrics import GatewayMetrics
from atlas_router.serve.openai_schema import ChatRequest, new_completion_id
from atlas_router.serve.registry import DefaultRule, Pair, RouterRegistry
from atlas_router.serve.settings import GatewaySettings


@dataclass
class Asked:
    """What one question got: the answering pair's record (or the last failure's), how it was routed,
    every pair tried, and the id of its record when one was written."""

    record: PairRecord
    routing: dict[str, Any] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    record_id: str | None = None

    @property
    def answered(self) -> bool:
        return self.record.error is None

    def to_dict(self) -> dict[str, Any]:
        """The record's fields, plus ``routing`` (when routed), ``attempts`` and ``record_id`` (when written)."""
        out = self.record.to_dict()
        if self.routing is not None:
            out["routing"] = self.routing
        out["attempts"] = [a.as_dict() for a in self.attempts]
        if self.record_id is not None:
            out["record_id"] = self.record_id
        return out


def local_controller(pool: Pool, router: Any = None, name: str | None = None,
                     settings: GatewaySettings | None = None) -> Controller:
    """A gateway's Controller without the HTTP layer: ``router`` (a fitted Router or a policy router)
    registered under ``name`` (default: its gateway name, see ``serve.loaders.gateway_name``)."""
    from atlas_router.serve.loaders import gateway_name

    holder: dict[str, Controller] = {}
    registry = RouterRegistry(DefaultRule(lambda: holder["c"].pool.config))
    if router is not None:
        registry.register(name or gateway_name(router), router)
    controller = Controller(pool, registry, settings or GatewaySettings(), GatewayMetrics())
    holder["c"] = controller
    return controller


async def ask(pool: Pool, question: str, *, images: Sequence[ImageInput] = (), router: Any = None,
              pair: Pair | None = None, alpha: float | None = None, tolerance: float | None = None,
              records: str | Path | None = None, prompts: str = "full",
              settings: GatewaySettings | None = None) -> Asked:
    """Answer ``question`` through the Controller, routed by ``router`` (None: the pool order's default
    rule) at the operating point, or by exactly ``pair``; closes ``pool`` when done. With ``records``, the
    answer is written there as the gateway writes it (``prompts``: off, hashed or full)."""
    from atlas_router.serve.records_sink import RecordSink

    from atlas_router.serve.loaders import gateway_name

    if pair is not None:  # unknown names (and missing keys) fail before any work
        pool.model(pair[0])
        pool.tool(pair[1])
    sink = RecordSink(records, prompts) if records is not None else None  # a bad directory fails before any work
    routing = router if pair is None else None
    name = gateway_name(routing) if routing is not None else "atlas"
    controller = local_controller(pool, routing, name, settings)
    content: Any = to_content_parts(question, list(images)) if images else question
    req = ChatRequest.model_validate({"model": name, "messages": [{"role": "user", "content": content}]})
    overrides = Overrides(alpha=alpha, tolerance=tolerance,
                          allowed_pairs=frozenset([pair]) if pair is not None else None)
    try:
        try:
            answer = await controller.complete(req, overrides)
        except GatewayError as err:
            return Asked(_failure(question, err), None, err.attempts)
        if answer.pair_record is not None:
            record = answer.pair_record()
        else:  # a policy's or a passthrough's answer: no pair run behind it
            record = PairRecord(model=answer.model, tool=answer.tool or "none", question=question, answer=answer.text,
                                response=answer.text, input_tokens=answer.input_tokens,
                                output_tokens=answer.output_tokens, cost=answer.cost, latency_s=answer.latency_s)
        asked = Asked(record, None if pair is not None else answer.explanation, answer.attempts)
        if sink is not None:
            asked.record_id = new_completion_id()  # the gateway's id form: feedback can name it
            sink.answered(asked.record_id, req, answer)
        return asked
    finally:
        await controller.aclose()
        if sink is not None:
            await sink.aclose()


def _failure(question: str, err: GatewayError) -> PairRecord:
    """The record of a question no pair answered: the last pair tried and its error (the whole story is in
    the attempts)."""
    tried = [a for a in err.attempts if a.outcome != "skipped"] or err.attempts
    last = tried[-1] if tried else None
    return PairRecord(model=last.model if last else "", tool=last.tool if last else "", question=question,
                      latency_s=last.latency_s if last else 0.0, error=(last.error if last and last.error else str(err)))
