"""The OpenAI-compatible routing gateway: a thin FastAPI layer over the controller.

``POST /v1/chat/completions`` (streamed as server-sent events or not): model ``atlas`` (or
``atlas-cluster``, ``atlas-rl``, ``atlas-hybrid``) routes, a pool model name passes through.
``POST /v1/feedback`` (with ``records`` set: serve/feedback.py), ``GET /v1/models``, ``GET /health``,
``GET /metrics`` (Prometheus), ``POST /admin/reload`` (also SIGHUP).
Keys are checked and oversized bodies refused in ASGI middleware, before a body is read or parsed; when
keys are set, /admin and /metrics want an admin key (an API key is not enough).

A streamed reply starts once the chosen pair has produced its first token (or, for a tool loop, its final
answer), so its status code and ``x-atlas-*`` headers are real; a direct pair's tokens then arrive as the
model produces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from atlas_router.core.jsonio import json_bytes
from atlas_router.errors import AtlasError
from atlas_router.pool.pool import Pool
from atlas_router.serve.admission import Admission, Rejected
from atlas_router.serve.auth import KeyRing, bearer_token
from atlas_router.serve.answer import Answer
from atlas_router.serve.controller import Controller
from atlas_router.serve.request import GatewayError, Overrides, atlas_headers
from atlas_router.serve.feedback import FeedbackError, online_routers, take_feedback
from atlas_router.serve.heap import settle_heap
from atlas_router.serve.logs import gateway_logger
from atlas_router.serve.metrics import CONTENT_TYPE, GatewayMetrics
from atlas_router.serve.openai_schema import (
    ChatRequest,
    RequestError,
    choice_body,
    completion_body,
    error_body,
    new_completion_id,
    parse_chat_request,
)
from atlas_router.serve.records_sink import RecordSink
from atlas_router.serve.registry import DefaultRule, RouterRegistry
from atlas_router.serve.settings import GatewaySettings

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
STREAM_PIECE_CHARS = 24


async def _read_body(receive: Callable[[], Awaitable[dict]]) -> bytes | None:
    """The whole request body, or None when the client left (or the body limit cut it off) first."""
    raw, more = b"", True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        raw += message.get("body", b"")
        more = message.get("more_body", False)
    return raw


class _JsonReply(Response):
    """A JSON reply for the chat path and the middleware: the body written once, the raw headers built once, two ASGI messages.
    Why not Starlette's JSONResponse: its header set-up and checks ran on every request at load, for
    nothing a reply built here needs."""

    def __init__(self, body: Any, status: int = 200, headers: dict[str, str] | None = None,
                 after: Callable[[], None] | None = None) -> None:
        self.body = json_bytes(body)
        self.status_code = status
        self.background = None
        self.after = after  # the bookkeeping that can wait until the reply is out (run even if sending failed)
        self.raw_headers = [(b"content-type", b"application/json"),
                            (b"content-length", str(len(self.body)).encode())]
        self.raw_headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        try:
            await self.send_to(send)
        finally:
            if self.after is not None:
                self.after()

    async def send_to(self, send: Callable[[dict], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


async def _send_json(send: Callable[[dict], Awaitable[None]], status: int, body: dict[str, Any],
                     headers: dict[str, str] | None = None) -> None:
    """A JSON reply from ASGI middleware, which has no response object to return."""
    await _JsonReply(body, status, headers).send_to(send)


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes``: at once from Content-Length, or as soon as a chunked
    body passes the limit (the rest is never read, whatever the app would have answered is dropped).

    Not FastAPI's ``max_body_size``: that one sits outside the auth middleware and answers a declared
    oversized body with a plain-text 413; this one runs after the key check and answers in the OpenAI
    error shape every client here parses."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = {"error": {"message": f"request body larger than {self.max_bytes} bytes",
                             "type": "invalid_request_error", "code": "request_too_large"}}
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await _send_json(send, 413, message)
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive() -> dict:
            if state["over"]:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > self.max_bytes:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: dict) -> None:
            if state["over"]:
                return
            state["started"] = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await _send_json(send, 413, message)


class AdmissionGate:
    """429 for a chat request that arrives while every run slot and queue place is taken, before its body
    is parsed or anything else is done: under overload the refusals are what the gateway spends its time
    on, so each must cost little (the handler still refuses one that finds the gateway full later)."""

    def __init__(self, app: ASGIApp, refuse: Callable[[dict, Callable, Callable], Awaitable[None]],
                 full: Callable[[], bool]) -> None:
        self.app, self.refuse, self.full = app, refuse, full

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" and self.full():
            return await self.refuse(scope, receive, send)
        await self.app(scope, receive, send)


class AuthMiddleware:
    """401 unless a valid key comes with requests to /v1; /admin (and /metrics unless public) want an
    admin key: 401 without one, 403 for an API key. With no keys at all the gateway is open (loopback)."""

    def __init__(self, app: ASGIApp, keys: KeyRing, metrics_public: bool, admin_keys: KeyRing | None = None) -> None:
        self.app = app
        self.keys = keys
        self.admin_keys = admin_keys or KeyRing()
        self.metrics_public = metrics_public

    def _admin_path(self, path: str) -> bool:
        return path.startswith("/admin/") or (path == "/metrics" and not self.metrics_public)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not (self.keys.enabled or self.admin_keys.enabled):
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        admin = self._admin_path(path)
        if not admin and (not path.startswith("/v1/") or not self.keys.enabled):  # admin keys alone leave /v1 open
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1") or None,
                             headers.get(b"x-api-key", b"").decode("latin-1") or None)
        key_id = self.admin_keys.check(token) if admin else self.keys.check(token)
        api_key = admin and key_id is None and self.keys.check(token) is not None
        del token
        if api_key:
            body = error_body(f"{path} needs an admin key (ATLAS_ADMIN_KEYS or admin_keys_sha256); an API key "
                              "is not enough" + ("" if self.admin_keys.enabled else "; none is configured, so "
                              "reload with SIGHUP"), kind="permission_error", code="admin_key_required")
            return await _send_json(send, 403, body)
        if key_id is None:
            body = error_body("missing or invalid API key (send 'Authorization: Bearer KEY')",
                              kind="authentication_error", code="invalid_api_key")
            return await _send_json(send, 401, body, {"www-authenticate": "Bearer"})
        scope.setdefault("state", {})["key_id"] = key_id
        await self.app(scope, receive, send)


def _sse(answer: Answer, req: ChatRequest, completion_id: str, fingerprint: str,
         on_done: Callable[[Answer, BaseException | None], Awaitable[None]]) -> AsyncIterator[bytes]:
    """The answer as ``chat.completion.chunk`` events: role, content pieces (as the model produces them
    for a live answer), tool calls, finish (with the ``atlas`` object), optionally usage, then ``[DONE]``.
    ``on_done`` runs last, whatever happened (it releases what the request holds)."""
    created = int(time.time())
    usage_on = req.include_usage()

    def event(body: dict[str, Any]) -> bytes:
        return b"data: " + json_bytes(body) + b"\n\n"

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None, **extra: Any) -> bytes:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": req.model,
                "system_fingerprint": fingerprint,
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}], **extra}
        if usage_on:
            body.setdefault("usage", None)
        return event(body)

    async def events() -> AsyncIterator[bytes]:
        failure: BaseException | None = None
        try:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
            first = True
            async for piece in answer.pieces(STREAM_PIECE_CHARS):
                yield chunk({"content": piece}, logprobs=answer.logprobs if first else None)
                first = False
            if answer.tool_calls:
                calls = [{"index": i, **call} for i, call in enumerate(answer.tool_calls)]
                yield chunk({"tool_calls": calls})
            yield chunk({}, answer.finish_reason or "stop", atlas=answer.atlas_field())
            if usage_on:
                usage = {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
                         "total_tokens": answer.input_tokens + answer.output_tokens}
                yield event({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                             "model": req.model, "system_fingerprint": fingerprint, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
        except Exception as err:  # the model failed mid-stream: say so in the stream (headers are sent)
            failure = err
            yield event(error_body(f"the model failed while streaming: {type(err).__name__}: {err}",
                                   kind="upstream_error", code="stream_failed"))
        finally:
            await on_done(answer, failure)

    return events()


def _peek_model(raw: bytes) -> str | None:
    """The ``model`` of a request body, without validating the rest (None when there is none)."""
    try:
        model = json.loads(raw).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


def _json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_bytes(body), status_code=status, headers=headers, media_type="application/json")


def _error_response(status: int, message: str, kind: str, code: str | None,
                    headers: dict[str, str] | None = None, param: str | None = None) -> Response:
    return _json_response(error_body(message, kind=kind, code=code, param=param), status, headers)


def _fingerprint(pool: Pool) -> str:
    """``system_fingerprint``: changes when the served pool's models or tools change (a reload)."""
    blob = json.dumps(pool.config.model_dump(mode="json"), sort_keys=True, default=str)
    return "fp_" + hashlib.sha256(blob.encode()).hexdigest()[:12]


class _Fingerprints:
    """The fingerprint of the pool being served, computed once per pool (a reload swaps the pool)."""

    def __init__(self) -> None:
        self._pool: Pool | None = None
        self._value = ""

    def of(self, pool: Pool) -> str:
        if pool is not self._pool:
            self._pool, self._value = pool, _fingerprint(pool)
        return self._value


def create_gateway_app(pool: Pool | None = None, *, pool_path: str | os.PathLike[str] | None = None,
                       routers: dict[str, Any] | None = None,
                       router_loaders: dict[str, Callable[[], Any]] | None = None,
                       settings: GatewaySettings | None = None, keys: KeyRing | None = None,
                       admin_keys: KeyRing | None = None,
                       use_cache: bool | None = None, handle_sighup: bool = False,
                       settle_gc: bool = False) -> FastAPI:
    """The gateway app.

    ``pool`` (else the pool of ``pool_path``, else the embedded default) is what it serves; a reload reads
    ``pool_path`` again (a ``pool`` object is rebuilt from its config). ``routers`` maps gateway names
    (``atlas-cluster`` ...) to router objects; ``router_loaders`` maps them to functions that build them
    again on reload (and first, for names ``routers`` lacks). ``keys`` defaults to the settings' digests
    plus ATLAS_API_KEYS, ``admin_keys`` (for /admin, and /metrics unless ``metrics_public``) to the
    settings' admin digests plus ATLAS_ADMIN_KEYS. ``handle_sighup`` reloads on SIGHUP (main thread only;
    the CLI sets it). ``settle_gc`` tunes the process's garbage collector once started (serve/heap.py): for
    a process that is the server's own, as in ``atlas serve``.
    """
    settings = settings or GatewaySettings()
    pool_loader = None
    if pool is None:
        pool_loader = lambda: Pool.load(pool_path, use_cache=use_cache)  # noqa: E731 - reload reads the file again
        pool = pool_loader()
    keys = keys if keys is not None else KeyRing.from_sources(settings.api_keys_sha256)
    admin_keys = admin_keys if admin_keys is not None else KeyRing.from_sources(settings.admin_keys_sha256, admin=True)
    holder: dict[str, Controller] = {}
    registry = _registry(DefaultRule(lambda: holder["c"].pool.config), routers, router_loaders, settings)
    controller = holder["c"] = Controller(pool, registry, settings, GatewayMetrics(), pool_loader=pool_loader)
    return _Gateway(controller, settings, keys, admin_keys, handle_sighup, settle_gc).app()


def _registry(default: DefaultRule, routers: dict[str, Any] | None, loaders: dict[str, Callable[[], Any]] | None,
              settings: GatewaySettings) -> RouterRegistry:
    """The routers by gateway name; with records on, cluster routers also learn from feedback at once."""
    registry = RouterRegistry(default)
    routers, loaders = dict(routers or {}), dict(loaders or {})
    if settings.records is not None:  # feedback moves cluster routers' decisions at once (serve/feedback.py)
        routers, loaders = online_routers(routers, loaders, settings.records.dir)
    for name, router in routers.items():
        registry.register(name, router, loader=loaders.get(name))
    for name, load in loaders.items():
        if name not in routers:
            registry.register(name, load(), loader=load)
    return registry


CHAT_PATH = "/v1/chat/completions"


class _GatewayApp(FastAPI):
    """FastAPI, with ``POST /v1/chat/completions`` answered on a short path: the same key check, body limit
    and admission (the same middleware classes), then the handler, without FastAPI's routing and its
    middleware layers. Why: every await in a request resumes the whole chain of coroutine frames above it,
    and at load the framework's ~20 frames were a third of the gateway's CPU per request."""

    chat_path: ASGIApp | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (self.chat_path is not None and scope["type"] == "http" and scope["path"] == CHAT_PATH
                and scope["method"] == "POST"):
            scope["app"] = self
            return await self.chat_path(scope, receive, send)
        await super().__call__(scope, receive, send)


class _Gateway:
    """The HTTP side of one gateway: admission, logs, records and metrics around the controller, one method
    per endpoint."""

    def __init__(self, controller: Controller, settings: GatewaySettings, keys: KeyRing, admin_keys: KeyRing,
                 handle_sighup: bool, settle_gc: bool = False) -> None:
        self.controller, self.settings, self.keys, self.admin_keys = controller, settings, keys, admin_keys
        self.registry, self.metrics = controller.routers, controller.metrics
        self.handle_sighup, self.settle_gc = handle_sighup, settle_gc
        self.started = int(time.time())  # /v1/models "created": stable for the gateway's lifetime
        self.admission = Admission(settings.max_concurrency, settings.max_queue, settings.queue_timeout_s)
        self.metrics.in_flight.set_function(lambda: self.admission.running)
        self.metrics.queued.set_function(lambda: self.admission.waiting)
        self.log = gateway_logger()
        self.fingerprints = _Fingerprints()
        self.background: set[asyncio.Task[Any]] = set()
        rec = settings.records
        self.sink = RecordSink(rec.dir, rec.prompts, rec.flush_s) if rec is not None else None  # answers, feedback

    def app(self) -> FastAPI:
        settings, keys, admin_keys = self.settings, self.keys, self.admin_keys
        app = _GatewayApp(title="atlas-router gateway", lifespan=self.lifespan, docs_url=None, redoc_url=None,
                          openapi_url=None)
        metrics_public = (settings.metrics_public if settings.metrics_public is not None
                          else not (keys.enabled or admin_keys.enabled))  # default: public only with no keys at all
        app.add_middleware(AdmissionGate, refuse=self.refuse_busy, full=lambda: self.admission.full)
        app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
        app.add_middleware(AuthMiddleware, keys=keys, metrics_public=metrics_public, admin_keys=admin_keys)
        gate = AdmissionGate(self.chat_endpoint, refuse=self.refuse_busy, full=lambda: self.admission.full)
        app.chat_path = AuthMiddleware(BodyLimitMiddleware(gate, max_bytes=settings.max_body_bytes), keys=keys,
                                       metrics_public=metrics_public, admin_keys=admin_keys)
        app.state.controller, app.state.metrics, app.state.admission = self.controller, self.metrics, self.admission
        app.add_exception_handler(StarletteHTTPException, self.http_error)  # type: ignore[arg-type]
        app.add_exception_handler(RequestValidationError, self.bad_request)  # type: ignore[arg-type]
        app.post(CHAT_PATH)(self.chat)  # reached through chat_path; registered so other methods get a 405
        app.post("/v1/feedback")(self.feedback)
        app.get("/v1/models")(self.models)
        app.get("/health")(self.health)
        app.get("/metrics")(self.prometheus)
        app.post("/admin/reload")(self.admin_reload)
        return app

    # -- lifecycle --------------------------------------------------------------------------------
    async def reload(self, source: str) -> dict[str, Any]:
        try:
            summary = await self.controller.reload()
        except Exception as err:
            self.metrics.child(self.metrics.reloads, "failed").inc()
            self.log.warning("pool reload failed", extra={"event": "reload", "source": source, "error": str(err)})
            raise
        self.metrics.child(self.metrics.reloads, "ok").inc()
        self.log.info("pool reloaded", extra={"event": "reload", "source": source, **summary})
        return summary

    def on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload("sighup"))
        self.background.add(task)
        task.add_done_callback(lambda t: (self.background.discard(t), t.cancelled() or t.exception()))

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        sighup = self.handle_sighup and hasattr(signal, "SIGHUP")
        if sighup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.on_sighup)
        if self.sink is not None:
            self.sink.start()
        for name, error in (await asyncio.to_thread(self.registry.warm)).items():
            self.log.warning("router failed its warm-up query", extra={"event": "warm", "router": name, "error": error})
        if self.settle_gc:
            settle_heap()
        self.log.info("gateway started", extra={"event": "start", "models": self.controller.model_names(),
                                                "routers": self.registry.names(), "auth": self.keys.enabled})
        try:
            yield
        finally:
            if sighup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await self.controller.aclose()
            if self.sink is not None:
                await self.sink.aclose()
            self.log.info("gateway stopped", extra={"event": "stop"})

    # -- errors -----------------------------------------------------------------------------------
    async def http_error(self, request: Request, exc: StarletteHTTPException) -> Response:
        """Framework errors (unknown path, wrong method) in the OpenAI error shape."""
        return _error_response(exc.status_code, str(exc.detail), "invalid_request_error", None, exc.headers)

    async def bad_request(self, request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        self.metrics.child(self.metrics.errors, "bad_request").inc()
        return _error_response(400, f"{loc or 'body'}: {first.get('msg')}", "invalid_request_error", "bad_request")

    # -- chat -------------------------------------------------------------------------------------
    async def chat_endpoint(self, scope: dict, receive: Callable, send: Callable) -> None:
        """``POST /v1/chat/completions`` as a bare ASGI app, for _GatewayApp's short path."""
        raw = await _read_body(receive)
        if raw is None:
            return  # the client left, or the body limit answers 413
        try:
            response = await self.answer_chat(raw, scope)
        except Exception:  # answer_chat answers its own errors; this is the boundary for a bug in building the reply
            self.log.exception("request failed", extra={"event": "request"})
            response = _error_response(500, "internal error", "server_error", None)
        await response(scope, receive, send)

    async def chat(self, request: Request) -> Response:
        """The chat route as FastAPI sees it: registered so that other methods get a 405 (POST takes the
        short path, chat_endpoint)."""
        return await self.answer_chat(await request.body(), request.scope)

    async def refuse_busy(self, scope: dict, receive: Callable, send: Callable) -> None:
        """The AdmissionGate's 429: the body is read only to name the model kind in the metrics."""
        request_id = new_completion_id()
        raw = await _read_body(receive)
        if raw is None:
            return  # the client left
        model = _peek_model(raw)
        kind = self.controller.kind_of(model) if model is not None else "invalid"
        err = self.admission.refusal()
        self.metrics.child(self.metrics.requests, kind, "429").inc()
        self.metrics.child(self.metrics.errors, "gateway_busy").inc()
        self.log.info("request refused", extra={"event": "request", "request_id": request_id, "model": model,
                                                "kind": kind, "status": 429, "error": str(err)})
        await _send_json(send, 429, error_body(str(err), kind="rate_limit_error", code="gateway_busy"),
                         {"x-request-id": request_id, "retry-after": str(max(1, round(err.retry_after_s)))})

    async def answer_chat(self, raw: bytes, scope: dict) -> Response:
        """A chat request's body: admission, the controller's answer, then the response (streamed or whole),
        its log line, metrics and record."""
        metrics, log, controller = self.metrics, self.log, self.controller
        request_id = new_completion_id()
        try:
            req = parse_chat_request(raw)
        except RequestError as err:
            metrics.child(metrics.errors, "bad_request").inc()
            metrics.child(metrics.requests, "invalid", "400").inc()
            return _error_response(400, str(err), "invalid_request_error", "bad_request",
                                   {"x-request-id": request_id}, param=err.param)
        kind = controller.kind_of(req.model)
        start = time.perf_counter()
        status, answer, error = 200, None, None
        stack = contextlib.AsyncExitStack()  # the admission slot and the pool, held until the reply is sent
        try:
            atlas_field = (req.model_extra or {}).get("atlas")
            overrides = Overrides.parse(atlas_field, atlas_headers(scope["headers"]))
            try:
                await stack.enter_async_context(self.admission.slot())
            except Rejected as err:
                raise GatewayError(429, str(err), kind="rate_limit_error", code="gateway_busy",
                                   retry_after_s=err.retry_after_s) from None
            answer = await controller.complete(req, overrides, stack)
        except GatewayError as err:
            status, error = err.status, err
        except AtlasError as err:
            status, error = 400, GatewayError(400, str(err))
        except Exception as err:  # the request boundary: log it, answer 500, keep serving
            log.exception("request failed", extra={"request_id": request_id})
            status, error = 500, GatewayError(500, f"internal error ({type(err).__name__})", kind="server_error")
        finally:
            if answer is None or answer.live is None:
                await stack.aclose()
        elapsed = time.perf_counter() - start
        metrics.child(metrics.requests, kind, str(status)).inc()
        metrics.child(metrics.latency, kind).observe(elapsed)
        fields: dict[str, Any] = {"event": "request", "request_id": request_id, "model": req.model, "kind": kind,
                                  "status": status, "latency_ms": round(elapsed * 1000, 2), "stream": req.stream,
                                  "key_id": scope.get("state", {}).get("key_id")}
        if error is not None:
            metrics.child(metrics.errors, error.code or error.kind).inc()
            fields.update(error=str(error), attempts=len(error.attempts))
            log.info("request refused" if status < 500 else "request failed", extra=fields)
            headers = {"x-request-id": request_id}
            if error.retry_after_s is not None:
                headers["retry-after"] = str(max(1, round(error.retry_after_s)))
            return _error_response(status, str(error), error.kind, error.code, headers, param=error.param)
        assert answer is not None
        headers = {"x-request-id": request_id, **answer.headers()}
        fingerprint = self.fingerprints.of(controller.pool)
        if req.stream:
            async def done(final: Answer, failure: BaseException | None) -> None:
                await stack.aclose()
                self.settle(request_id, req, final, fields, failure)

            return StreamingResponse(_sse(answer, req, request_id, fingerprint, done), media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        choices = [choice_body(0, answer.text, answer.finish_reason, answer.tool_calls, answer.logprobs)]
        choices += [choice_body(i, c.text, c.finish_reason, c.tool_calls, c.logprobs)
                    for i, c in enumerate(answer.alternatives, start=1)]
        body = completion_body(req.model, choices, answer.input_tokens, answer.output_tokens, fingerprint,
                               extra={"atlas": answer.atlas_field()}, completion_id=request_id)
        return _JsonReply(body, headers=headers, after=lambda: self.settle(request_id, req, answer, fields))

    def settle(self, request_id: str, req: ChatRequest, answer: Answer, fields: dict[str, Any],
               failure: BaseException | None = None) -> None:
        """An answered request's bookkeeping, once its reply is out (why then: none of it changes the reply,
        and the client waits less): the route, cost and token counts, its record, its log line."""
        metrics = self.metrics
        metrics.child(metrics.routes, answer.router or "passthrough", answer.model, answer.tool or "").inc()
        metrics.child(metrics.cost, answer.model, answer.tool or "").inc(answer.cost)
        metrics.child(metrics.tokens, answer.model, "input").inc(answer.input_tokens)
        metrics.child(metrics.tokens, answer.model, "output").inc(answer.output_tokens)
        if self.sink is not None and failure is None:
            self.sink.answered(request_id, req, answer, fields["key_id"])
        self.log.info("request answered" if failure is None else "stream failed",
                      extra={**fields, "router": answer.router, "pair_model": answer.model, "pair_tool": answer.tool,
                             "attempts": len(answer.attempts), "cluster": answer.explanation.get("cluster"),
                             "cost": answer.cost, "error": str(failure) if failure else None})

    # -- the other endpoints ----------------------------------------------------------------------
    async def feedback(self, request: Request) -> Response:
        """A score for an answer (serve/feedback.py): a record, and counts for the online router."""
        try:
            body = await take_feedback(await request.body(), self.sink, self.registry,
                                       request.scope.get("state", {}).get("key_id"))
        except FeedbackError as err:
            return _error_response(err.status, str(err), "invalid_request_error", err.code, param=err.param)
        return _json_response(body)

    async def models(self) -> dict[str, Any]:
        created = self.started
        data = [{"id": n, "object": "model", "created": created, "owned_by": "atlas-router"}
                for n in self.registry.names()]
        data += [{"id": n, "object": "model", "created": created, "owned_by": "pool"}
                 for n in self.controller.model_names()]
        return {"object": "list", "data": data}

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", "models": self.controller.model_names(), "routers": self.registry.names(),
                "running": self.admission.running, "queued": self.admission.waiting,
                "circuits": self.controller.breakers.states()}

    async def prometheus(self) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def admin_reload(self) -> Response:
        try:
            summary = await self.reload("admin")
        except AtlasError as err:
            return _error_response(400, f"reload failed, still serving the previous pool: {err}",
                                   "invalid_request_error", "reload_failed")
        except Exception as err:  # e.g. a router file that loads but cannot route: keep serving
            return _error_response(500, f"reload failed ({type(err).__name__}), still serving the previous pool",
                                   "server_error", "reload_failed")
        return _json_response({"status": "reloaded", **summary})
