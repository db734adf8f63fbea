"""A stand-in for an OpenAI-compatible vision-language model endpoint, served on loopback by the tests.

No vision model weights can be reached from the test machines, so this server plays the VLM: it decodes
the data URLs of the image parts it receives, matches the image bytes' hash to a scene the test
rendered, and answers each prompt of the tools' pipelines the way a VLM would from that scene's known
content (JSON tables, boxes, figure structure). Text-only follow-up steps are answered from the text
they carry. It makes one deliberate mistake per pipeline (a missed instance, a wrong solution) so the
tools' checking steps are exercised. Every request is logged for the tests to inspect.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from support.scenes import Scene, png_bytes


def scene_key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SceneBook:
    """Scenes by the hash of the PNG bytes the tests send."""

    def __init__(self) -> None:
        self.scenes: dict[str, Scene] = {}

    def add(self, scene: Scene) -> bytes:
        data = png_bytes(scene.image)
        self.scenes[scene_key(data)] = scene
        return data


def _parts(messages: list[dict[str, Any]]) -> tuple[str, list[bytes]]:
    texts, images = [], []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for p in content or []:
            if p.get("type") == "text":
                texts.append(p["text"])
            elif p.get("type") == "image_url":
                url = p["image_url"]["url"]
                images.append(base64.b64decode(url.split(",", 1)[1]))
    return "\n".join(texts), images


def _answer_from_table(prompt: str) -> str:
    rows = [ln.strip("| ").split(" | ") for ln in prompt.splitlines() if ln.startswith("| ")][1:]
    question = prompt.split("Question:", 1)[1].splitlines()[0]
    values = {r[0]: float(r[1]) for r in rows if len(r) >= 2 and re.fullmatch(r"-?[\d.]+", r[1])}
    if "highest" in question.lower():
        return max(values, key=values.get)
    named = [label for label in values if label in question]
    if "difference" in question.lower() and len(named) == 2:
        return f"{abs(values[named[0]] - values[named[1]]):g}"
    return f"{values[named[0]]:g}" if named else "unknown"


def _reply(book: SceneBook, messages: list[dict[str, Any]]) -> str:
    text, images = _parts(messages)
    scene = book.scenes.get(scene_key(images[0])) if images else None
    truth = scene.truth if scene else {}
    if "Extract the data shown in this chart" in text:
        if scene is None or scene.kind != "chart":
            return "I cannot see a chart here."
        return "```json\n" + json.dumps({"title": truth["title"], "x_label": "year", "y_label": "sales",
                                          "columns": truth["columns"], "rows": truth["rows"]}) + "\n```"
    if "Data table extracted from a chart" in text:
        return f"Looking up the table.\nAnswer: {_answer_from_table(text)}"
    if "Find every object that the question asks to count" in text:
        boxes = truth.get("boxes", [])
        # a VLM often misses one instance on the first pass; the check step below finds it
        return json.dumps({"object": truth.get("object", "object"), "instances": [{"box": b} for b in boxes[:-1]]})
    if "were found (index: box)" in text:
        boxes = truth.get("boxes", [])
        return json.dumps({"missing": boxes[-1:], "wrong": []})
    if "Describe the geometry figure" in text:
        return json.dumps({k: truth[k] for k in ("points", "lines", "lengths", "angles") if k in truth}
                          | {"segments": truth.get("lines", [])})
    if "Solve step by step" in text:
        figure = json.loads(text.split("Figure: ", 1)[1].splitlines()[0])
        ab, bc = figure["lengths"]["AB"], figure["lengths"]["BC"]
        if ab == 5:  # a deliberate slip: adds the legs; the check step must catch it
            return f"AC = AB + BC = {ab + bc:g}.\nAnswer: {ab + bc:g}"
        return f"Angle ABC is right, so AC = sqrt(AB^2 + BC^2) = {math.hypot(ab, bc):g}.\nAnswer: {math.hypot(ab, bc):g}"
    if "Check every step against the figure" in text:
        figure = json.loads(text.split("Figure: ", 1)[1].splitlines()[0])
        right = math.hypot(figure["lengths"]["AB"], figure["lengths"]["BC"])
        proposed = re.findall(r"Answer: ([\d.]+)", text)
        ok = proposed and math.isclose(float(proposed[-1]), right)
        return f"VERDICT: {'correct' if ok else 'wrong'}\nAnswer: {right:g}"
    # a plain question to the pair's model
    if scene is not None and scene.kind == "counting":
        return f"I count {truth['count']} {truth['object']}s.\nFinal answer: {truth['count']}"
    if scene is not None and scene.kind == "chart":
        return f"Final answer: {max(truth['rows'], key=lambda r: r[1])[0]}"
    if images:
        return "Final answer: an image I do not know"
    return "Final answer: no image was given to me"


def create_fake_vlm_app(book: SceneBook) -> tuple[FastAPI, list[dict[str, Any]]]:
    app = FastAPI()
    log: list[dict[str, Any]] = []

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        log.append(body)
        text = _reply(book, body["messages"])
        return JSONResponse({
            "id": f"fake-{len(log)}", "object": "chat.completion", "model": body.get("model", "fake-vlm"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": max(1, len(text.split()))},
        })

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "fake-vlm", "object": "model"}]}

    return app, log
