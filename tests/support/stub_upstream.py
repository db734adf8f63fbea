"""A small OpenAI-compatible upstream for gateway tests; the requested model name picks its behaviour.

- ``echo`` (and any unlisted name): answers "<model> says: <last user message>. Final answer: 42";
- ``half``: fails (HTTP 500) every second request it gets, answers like ``echo`` otherwise;
- ``down``: HTTP 500 every time;
- ``slow``: answers after ``slow_s`` seconds;
- ``coder``: first turn writes a Python block printing the process id; the next turn echoes the tool
  output it was given, so the final reply shows where the code ran.
Counts every request per model in ``app.state.requests``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def _reply(text: str) -> dict:
    return {
        "id": "stub", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
    }


def create_stub_upstream(delay_s: float = 0.0, slow_s: float = 2.0) -> FastAPI:
    app = FastAPI()
    seen: Counter[str] = Counter()
    app.state.requests = seen

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body.get("model", "echo")
        seen[model] += 1
        if delay_s:
            await asyncio.sleep(delay_s)
        last = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        if model == "down" or (model == "half" and seen[model] % 2 == 0):
            return JSONResponse({"error": {"message": "upstream failure on purpose"}}, status_code=500)
        if model == "slow":
            await asyncio.sleep(slow_s)
        if model == "coder":
            if "[python-code output]" in last:
                return _reply(f"The code printed: {last.split(chr(10))[1]}. Final answer: done")
            return _reply("```python\nimport os\nprint('pid', os.getpid())\n```")
        return _reply(f"{model} says: {last[-200:]}. Final answer: 42")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m} for m in ("echo", "half", "down", "slow", "coder")]}

    return app
