"""A scripted OpenAI-compatible judge for grader tests: its verdicts follow a known rule, so tests can check
what the graders make of them (parsing, position swap, who graded).

A reply is *right* when its "Final answer: N" equals the last number of the question (the rule of
``deterministic_upstream``'s model ``good``). Behaviour by requested model name:

- ``fair``: pointwise ``[[9]]`` for a right reply, ``[[2]]`` for a wrong one, and ``I cannot tell.`` (no
  verdict) when the reply says "unsure"; the same as yes/no for the verdict rubric; pairwise ``[[A]]``/``[[B]]`` for the right one, ``[[C]]`` if both
  or neither are right;
- ``biased``: pairwise always ``[[A]]`` (pure position bias); pointwise like ``fair``;
- ``down``: HTTP 500.
Counts requests per model in ``app.state.requests``.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

_ANSWER = re.compile(r"Final answer:\s*(-?\d+)")


def is_right(question: str, reply: str) -> bool:
    numbers = re.findall(r"\d+", question)
    found = _ANSWER.findall(reply)
    return bool(numbers and found and found[-1] == numbers[-1])


def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    j = text.find(end, i + len(start))
    return text[i + len(start): j].strip() if i >= 0 and j >= 0 else ""


def verdict(model: str, user: str) -> str:
    if user.startswith("[Question]") and "[Response]" in user:  # the yes/no verdict rubric
        q = _between(user, "[Question]", "[Response]")
        reply = _between(user, "[Response]", "Is the response")
        return "unclear" if "unsure" in reply else ("Yes." if is_right(q, reply) else "no, it is wrong")
    if "[User Question]" in user:  # pairwise
        if model == "biased":
            return "[[A]]"
        q = _between(user, "[User Question]", "[The Start of Assistant A's Answer]")
        a = is_right(q, _between(user, "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]"))
        b = is_right(q, _between(user, "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]"))
        return "[[C]]" if a == b else ("[[A]]" if a else "[[B]]")
    q = _between(user, "[Question]", "[The Start of Assistant's Answer]")
    reply = _between(user, "[The Start of Assistant's Answer]", "[The End of Assistant's Answer]")
    if "unsure" in reply:
        return "I cannot tell."
    return "[[9]]" if is_right(q, reply) else "Rating: [[2]]"


def create_judge_app(delay_s: float = 0.0) -> FastAPI:
    app = FastAPI()
    seen: Counter[str] = Counter()
    app.state.requests = seen

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body.get("model", "fair")
        seen[model] += 1
        if delay_s:
            await asyncio.sleep(delay_s)
        if model == "down":
            return JSONResponse({"error": {"message": "judge down on purpose"}}, status_code=500)
        user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": verdict(model, user)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53}}

    return app
