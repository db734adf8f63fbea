"""A plain OpenAI-compatible server for the pool's models: ``POST /v1/chat/completions``, ``GET /v1/models``.

It makes an in-process model reachable the way vLLM or llama.cpp's server would, so the HTTP backend, the
tests and the benchmarks talk to a real server. No routing happens here; the gateway does that.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from atlas_router.errors import AtlasError, UnknownNameError
from atlas_router.pool.pool import Pool
from atlas_router.serve.request import sampling_of
from atlas_router.serve.openai_schema import ChatRequest, choice_body, completion_body, error_body


def create_model_app(pool: Pool) -> FastAPI:
    """A FastAPI app answering chat completions with the pool's models, by name."""
    app = FastAPI(title="atlas-router model server")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m.name, "object": "model", "owned_by": "atlas"} for m in pool.config.models]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest) -> Any:
        try:
            model = pool.model(req.model)
        except UnknownNameError as err:
            return JSONResponse(error_body(str(err), code="model_not_found"), status_code=404)
        params = sampling_of(req)
        missing = model.unsupported(params)
        if missing:  # refused, never silently ignored
            return JSONResponse(error_body(f"model '{req.model}' does not support {', '.join(missing)}",
                                           code="unsupported_parameter", param=missing[0]), status_code=400)
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        try:
            c = await model.chat(messages, params)
        except AtlasError as err:
            return JSONResponse(error_body(str(err), kind="upstream_error"), status_code=502)
        choices = [choice_body(i, x.text, x.finish_reason, x.tool_calls, x.logprobs)
                   for i, x in enumerate([c, *c.alternatives])]
        return completion_body(req.model, choices, c.input_tokens, c.output_tokens)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
