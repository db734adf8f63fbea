"""A loopback OpenAI-compatible upstream that serves the request features a gateway must pass through:
``tools`` / ``tool_choice`` (and tool-result turns), ``response_format``, ``n`` and ``logprobs``.

- with tools (and tool_choice not "none") and no tool result yet: calls the named function, else the
  first one, with ``{"query": <last user text>}``; finish_reason ``tool_calls``;
- after a tool-result turn: "tool said: <its content>" (so a test sees the turn arrived with its id);
- ``response_format`` json_object: ``{"answer": <last user text>, "roles": [...]}``; json_schema: an
  object with the schema's properties, strings set to the last user text, integers to the turn count;
- otherwise: "roles=<roles of the messages it got>; last=<last user text>", so a test can see whether a
  conversation arrived as turns; ``n`` choices, each with logprobs when asked.
With ``stream`` (and no tools): server-sent events, one word a chunk; after the first word it waits
until the test sets ``app.state.gate`` (a threading.Event), counting in ``app.state.gate_timeouts`` the
times it gave up waiting (10 s), so a test sees whether its client got the first word before the last.
Every request body is kept in ``app.state.bodies``.
"""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse


def create_tools_upstream() -> FastAPI:
    app = FastAPI()
    app.state.bodies = []
    app.state.gate = threading.Event()
    app.state.gate_timeouts = 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        messages = body["messages"]
        roles = [m["role"] for m in messages]
        last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        tools = body.get("tools") or []
        choice = body.get("tool_choice", "auto")
        tool_result = next((m for m in reversed(messages) if m["role"] == "tool"), None)
        message: dict = {"role": "assistant", "content": None}
        finish = "stop"
        if tools and choice != "none" and tool_result is None:
            name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
            message["tool_calls"] = [{"id": "call_up_1", "type": "function",
                                      "function": {"name": name, "arguments": json.dumps({"query": last})}}]
            finish = "tool_calls"
        elif tool_result is not None:
            message["content"] = f"tool said: {tool_result['content']} (id {tool_result.get('tool_call_id')})"
        elif (body.get("response_format") or {}).get("type") == "json_schema":  # filled by property type
            props = body["response_format"]["json_schema"]["schema"].get("properties", {})
            fill = {"string": last, "integer": len(roles)}
            message["content"] = json.dumps({k: fill.get(v.get("type")) for k, v in props.items()})
        elif (body.get("response_format") or {}).get("type") == "json_object":
            message["content"] = json.dumps({"answer": last, "roles": roles})
        else:
            message["content"] = f"roles={','.join(roles)}; last={last}"
        words = (message["content"] or "").split()
        logprobs = None
        if body.get("logprobs"):
            logprobs = {"content": [{"token": w, "logprob": -0.5, "bytes": list(w.encode()),
                                     "top_logprobs": [{"token": w, "logprob": -0.5, "bytes": list(w.encode())}]
                                     [: body.get("top_logprobs") or 0]} for w in words],
                        "refusal": None}
        if body.get("stream") and message["content"]:
            return StreamingResponse(_events(body["model"], message["content"]), media_type="text/event-stream")
        choices = [{"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish}
                   for i in range(body.get("n") or 1)]
        return {"id": "up", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}

    async def _events(model: str, text: str):
        def event(delta: dict, finish: str | None = None, **extra) -> str:
            chunk = {"id": "up", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            return f"data: {json.dumps(chunk)}\n\n"

        words = text.split(" ")
        yield event({"role": "assistant", "content": ""})
        yield event({"content": words[0]})
        if not await asyncio.to_thread(app.state.gate.wait, 10):
            app.state.gate_timeouts += 1
        for word in words[1:]:
            yield event({"content": " " + word})
        yield event({}, "stop")
        usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
        yield f"data: {json.dumps({'id': 'up', 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "toolbox", "object": "model"}]}

    return app
