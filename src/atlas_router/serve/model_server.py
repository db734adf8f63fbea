"""A plain OpenAI-compatible server for the pool's models: ``POST /v1/chat/completions``, ``GET /v1/models``.

It makes an in-process model reachable the way vLLM or llama.cpp's server would, so the HTTP backend, the
tests and the benchmarks talk to a real server. No routing happens here; the gateway does that.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from atlas_router.errors import AtlasError, UnknownNameError
from atlas_router.pool.models.base import SamplingParams
from atlas_router.pool.pool import Pool
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
        params = SamplingParams(
            temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_completion_tokens or req.max_tokens,
            seed=req.seed, stop=req.stop_list(),
        )
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        try:
            c = await model.chat(messages, params)
        except AtlasError as err:
            return JSONResponse(error_body(str(err), kind="upstream_error"), status_code=502)
        return completion_body(req.model, [choice_body(0, c.text, c.finish_reason)], c.input_tokens, c.output_tokens)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
