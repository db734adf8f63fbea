"""What a chat request asks of the gateway beyond the OpenAI fields: the routing knobs (``Overrides``), the
question the router sees, the images it carries and the sampling settings; and ``GatewayError``, the one
way a request is refused (HTTP status, OpenAI error type and code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atlas_router.core.images import ImageInput, content_text, load_images
from atlas_router.models.base import SamplingParams
from atlas_router.serve.openai_schema import ChatRequest
from atlas_router.serve.registry import Pair, parse_pair


class GatewayError(Exception):
    """A request the gateway cannot answer: HTTP status, OpenAI error type and code, optional Retry-After."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 retry_after_s: float | None = None, attempts: list[Any] | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code, self.param = status, kind, code, param
        self.retry_after_s = retry_after_s
        self.attempts = attempts or []


@dataclass(frozen=True)
class Overrides:
    """Per-request routing knobs: the cost/quality trade-off, a cost budget, the pairs allowed."""

    alpha: float | None = None
    max_cost: float | None = None
    allowed_pairs: frozenset[Pair] | None = None
    max_latency_s: float | None = None  # drop pairs whose measured latency is over it (serve/latency.py)
    tolerance: float | None = None  # operating point: cheapest pair within this many accuracy points (not with alpha)

    @classmethod
    def parse(cls, body: Any, headers: dict[str, str]) -> "Overrides":
        """From the body's ``atlas`` object and ``x-atlas-alpha``/``-max-cost``/``-allowed-pairs`` headers
        (the body wins). Bad values raise GatewayError 400."""
        if body is None and not headers:
            return NO_OVERRIDES  # most requests: nothing asked beyond the OpenAI fields
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise GatewayError(400, "'atlas' must be an object: {alpha, max_cost, allowed_pairs}", code="bad_atlas_field")
        unknown = set(body) - {"alpha", "max_cost", "allowed_pairs", "max_latency_s", "tolerance"}
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
        latency = _number("max_latency_s", body.get("max_latency_s", headers.get("x-atlas-max-latency-s")))
        tolerance = _number("tolerance", body.get("tolerance", headers.get("x-atlas-tolerance")))
        if tolerance is not None and tolerance > 1:
            raise GatewayError(400, f"atlas tolerance must lie in [0, 1] (accuracy points: 0.02 = 2 points), got "
                               f"{tolerance:g}", code="bad_atlas_field")
        if tolerance is not None and alpha_value is not None:
            raise GatewayError(400, "atlas alpha and tolerance are two operating points; give one",
                               code="bad_atlas_field")
        return cls(alpha_value, _number("max_cost", max_cost), _pairs(allowed), latency, tolerance)


NO_OVERRIDES = Overrides()


def atlas_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The ``x-atlas-*`` headers of an ASGI scope's raw (lower-cased) header list: the only ones
    ``Overrides.parse`` reads, so the others are not decoded at all."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k.startswith(b"x-atlas-")}


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


def question_of(messages: list[dict[str, Any]]) -> str:
    """What the router sees: the last user message (the pair itself receives the whole conversation)."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    if last is None:
        raise GatewayError(400, "the conversation has no user message to route", code="no_user_message",
                           param="messages")
    question = content_text(messages[last].get("content") or "").strip()
    if not question:
        raise GatewayError(400, "the last user message is empty", code="empty_question", param="messages")
    return question


def images_of(messages: list[dict[str, Any]]) -> list[ImageInput]:
    """The images of the last user message's ``image_url`` parts, loaded and checked as ``core.images``
    checks what a client sends: data: URLs, http(s) URLs (other hosts than loopback only where remote
    images are allowed), never local paths. Blocking (a URL may be fetched): call it in a worker thread."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
    content = messages[last].get("content") if last is not None else None
    if not isinstance(content, list):
        return []
    urls = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise GatewayError(400, "an image_url part has no 'url' string", code="bad_image", param="messages")
            urls.append(url)
    return load_images(urls, allow_local=False) if urls else []


def sampling_of(req: ChatRequest) -> SamplingParams:
    fmt = req.response_format.model_dump(exclude_none=True) if req.response_format else None
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    return SamplingParams(temperature=req.temperature, top_p=req.top_p,
                          max_tokens=req.max_completion_tokens or req.max_tokens, seed=req.seed, stop=req.stop_list(),
                          presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                          n=req.n or 1, logprobs=bool(req.logprobs), top_logprobs=req.top_logprobs,
                          response_format=fmt, tools=tools, tool_choice=req.tool_choice)
