"""An OpenAI-compatible upstream whose answer is a pure function of (model, last user message).

Stands in for a remote model in collection tests: reruns must give identical records, and a small fixed
delay keeps a run long enough to be killed half-way.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from fastapi import FastAPI, Request


def answer_for(model: str, question: str) -> str:
    """'Final answer: N' where N is the question's last number for model 'good', a hash-derived number otherwise."""
    numbers = re.findall(r"\d+", question)
    if model.startswith("good") and numbers:
        return numbers[-1]
    return str(int(hashlib.sha1(f"{model}|{question}".encode()).hexdigest(), 16) % 100)


def create_deterministic_app(delay_s: float = 0.02) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        await asyncio.sleep(delay_s)
        user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        text = f"Let me think. Final answer: {answer_for(body['model'], user)}"
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10 + len(user) // 4, "completion_tokens": 8, "total_tokens": 18 + len(user) // 4},
        }

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "good"}, {"id": "noisy"}]}

    return app
