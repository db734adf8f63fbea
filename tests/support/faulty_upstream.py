"""An OpenAI-compatible upstream that misbehaves on purpose, chosen by the requested model name.

- ``ok``: answers "pong" with usage;
- ``nousage``: answers without a usage field (the client must count tokens itself);
- ``fail``: HTTP 500 every time;
- ``flaky``: HTTP 503 on the first try of each question, fine on the retry (half of all requests fail);
- ``ratelimit``: 429 with Retry-After on the first try of each question, fine on the retry;
- ``stall``: never answers within any sane timeout;
- ``malformed``: 200 with a body that is not JSON;
- ``badshape``: 200 with JSON lacking ``choices``;
- ``unauthorized``: 401.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse


def create_faulty_app() -> FastAPI:
    app = FastAPI()
    seen: Counter[str] = Counter()
    app.state.requests = seen

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body.get("model", "ok")
        seen[model] += 1
        text = "pong"
        ok = {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{text}. Final answer: 42"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }
        if model == "ok":
            return ok
        if model == "nousage":
            ok.pop("usage")
            return ok
        if model == "fail":
            return JSONResponse({"error": {"message": "internal failure"}}, status_code=500)
        if model == "flaky":
            key = f"flaky|{body['messages'][-1].get('content')}"
            seen[key] += 1
            return JSONResponse({"error": {"message": "busy"}}, status_code=503) if seen[key] % 2 else ok
        if model == "ratelimit":
            key = f"ratelimit|{body['messages'][-1].get('content')}"
            seen[key] += 1
            if seen[key] % 2 == 1:
                return JSONResponse({"error": {"message": "slow down"}}, status_code=429, headers={"retry-after": "0"})
            return ok
        if model == "stall":
            await asyncio.sleep(3600)
        if model == "malformed":
            return PlainTextResponse("<html>this is not json", status_code=200)
        if model == "badshape":
            return {"result": "no choices here"}
        if model == "unauthorized":
            return JSONResponse({"error": {"message": "bad key"}}, status_code=401)
        return JSONResponse({"error": {"message": f"unknown model {model}"}}, status_code=404)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m} for m in ("ok", "nousage", "fail", "flaky", "ratelimit", "stall", "malformed", "badshape")]}

    return app
