"""Chart, counting and geometry tools: a vision-language model (any OpenAI-compatible endpoint that takes
image content parts: vLLM, SGLang, Ollama, llama.cpp server, OpenAI) driven through several small steps,
because one "look and answer" prompt is where VLMs fail most.

- chart: extract the chart's data table as JSON, then answer the question from the table;
- counting: list and locate every instance (boxes), then check the list for missed and duplicate
  instances; the count is computed from the checked list, not guessed;
- geometry: extract the figure's structure (points, segments, lengths, angles, relations), solve from
  it, check the solution against it, and summarise.

Settings: ``endpoint`` (required), ``model_id``, ``api_key_env``, ``timeout_s``, ``max_retries``,
``max_tokens``, ``temperature``; the calls reuse the pool's HTTP backend (retries, timeouts, usage).
Each result's ``data`` holds the structured intermediate output and every step's reply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from atlas_router.config import ModelSpec, Sampling
from atlas_router.errors import AtlasError
from atlas_router.core.images import ImageInput, image_part
from atlas_router.models.openai_http import OpenAIChatModel
from atlas_router.tools.base import Tool, ToolContext, ToolResult
from atlas_router.tools.multimodal.common import answer_line, context_images, find_call, parse_image_call, parse_json_reply
from atlas_router.tools.settings_check import reject_unknown

SETTINGS = ("endpoint", "model_id", "api_key_env", "timeout_s", "max_retries", "max_tokens", "temperature",
            "max_concurrency")
SYSTEM = "You are a precise visual analyst. Follow the requested output format exactly."


class StepError(AtlasError):
    """A step whose reply could not be used (no JSON after a retry, a wrong shape)."""


@dataclass
class Session:
    """One tool run's conversation with the VLM: every step's prompt and reply, and the tokens spent."""

    model: OpenAIChatModel
    steps: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0

    async def ask(self, step: str, prompt: str, images: list[ImageInput] | None = None) -> str:
        images = images or []
        content: Any = [{"type": "text", "text": prompt}, *(image_part(i) for i in images)] if images else prompt
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
        completion = await self.model.chat(messages)
        self.input_tokens += completion.input_tokens
        self.output_tokens += completion.output_tokens
        self.steps.append({"step": step, "prompt": prompt, "images": len(images), "reply": completion.text})
        return completion.text

    async def ask_json(self, step: str, prompt: str, images: list[ImageInput] | None = None) -> dict[str, Any]:
        """A JSON object from the VLM; one retry that quotes the parse error, then StepError."""
        reply = await self.ask(step, prompt, images)
        try:
            return parse_json_reply(reply)
        except ValueError as err:
            retry = (f"{prompt}\n\nYour previous reply was not a JSON object ({err}). "
                     "Reply with the JSON object only, no other text.")
            reply = await self.ask(f"{step} (retry)", retry, images)
            try:
                return parse_json_reply(reply)
            except ValueError:
                raise StepError(f"step '{step}': the model gave no JSON object: {reply[:120]!r}") from None

    def usage(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "calls": len(self.steps)}


class VLMTool(Tool):
    """Base of the VLM-backed tools: settings, the image call, one HTTP model per run."""

    mode = "loop"
    input_kind: ClassVar[str] = "image"
    call_names: ClassVar[tuple[str, ...]] = ()
    what: ClassVar[str] = ""

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        reject_unknown(self.settings, SETTINGS)
        if not self.settings.get("endpoint"):
            raise ValueError("the 'endpoint' setting is required (an OpenAI-compatible URL such as "
                             "http://127.0.0.1:8000/v1 serving a vision model)")
        self.prefetch = bool(spec.settings.get("prefetch", True))
        s = self.settings
        self.model_spec = ModelSpec(
            name=f"{spec.name}-vlm", backend="openai", endpoint=str(s["endpoint"]), model_id=s.get("model_id"),
            api_key_env=s.get("api_key_env"), timeout_s=float(s.get("timeout_s", 60.0)),
            max_retries=int(s.get("max_retries", 2)), max_concurrency=int(s.get("max_concurrency", 4)),
            vision=True,
            sampling=Sampling(temperature=float(s.get("temperature", 0.0)), max_tokens=int(s.get("max_tokens", 768))),
        )
        self.model_spec.api_key()  # a named but unset key is a config error now, not at the first call

    def usage(self) -> str:
        name = self.call_names[0]
        return (f"The question comes with an image. A vision tool can {self.what}. Call it on its own line:\n"
                f'{name}(image=1, question="...")\nYou will get its findings back; then continue.')

    def extract_call(self, text: str) -> str | None:
        return find_call(text, self.call_names)

    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        try:
            call = parse_image_call(tool_input, self.call_names)
            targets = context_images(call, context, self.name)
        except AtlasError as err:
            return ToolResult(ok=False, output="", error=str(err))
        question = call.question.strip() or context.question.strip()
        if not question:
            return ToolResult(ok=False, output="", error=f"{self.name}: no question given")
        session = Session(OpenAIChatModel(self.model_spec))
        try:
            output, data = await self.pipeline(session, [img for _, img in targets], question)
        except AtlasError as err:
            return ToolResult(ok=False, output="", error=str(err),
                              data={"steps": session.steps, "usage": session.usage()})
        finally:
            await session.model.aclose()
        data.update(question=question, images=[n for n, _ in targets], steps=session.steps, usage=session.usage())
        return ToolResult(ok=True, output=output, data=data)

    async def pipeline(self, session: Session, images: list[ImageInput], question: str) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError


# -- chart ----------------------------------------------------------------------------------------------

def _table(obj: dict[str, Any]) -> dict[str, Any]:
    columns = obj.get("columns")
    rows = obj.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise StepError("step 'extract_table': the JSON needs 'columns' (a list) and 'rows' (a list of lists)")
    return {"title": str(obj.get("title") or ""), "x_label": str(obj.get("x_label") or ""),
            "y_label": str(obj.get("y_label") or ""), "columns": [str(c) for c in columns], "rows": rows}


def table_markdown(table: dict[str, Any]) -> str:
    """A data table as Markdown, the form language models read tables best in."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "/").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in table["columns"]) + " |"
    rule = "|" + "---|" * len(table["columns"])
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table["rows"]]
    title = f"{table['title']}\n" if table.get("title") else ""
    return title + "\n".join([head, rule, *body])


class ChartTool(VLMTool):
    """Chart question answering: data table extraction (JSON), then an answer computed from the table."""

    kind = "chart"
    call_names = ("chart",)
    what = "read a chart's data table and answer a question about it"
    sample_input = 'chart(image=1, question="What was the value in 2020?")'

    async def pipeline(self, session: Session, images: list[ImageInput], question: str) -> tuple[str, dict[str, Any]]:
        table = _table(await session.ask_json("extract_table", (
            "Extract the data shown in this chart as a table. Reply with one JSON object with the keys "
            '"title", "x_label", "y_label", "columns" (the column names) and "rows" (one list of cell values '
            "per row, numbers without units or thousands separators). Include every data point."), images))
        reply = await session.ask("answer", (
            f"Data table extracted from a chart:\n{table_markdown(table)}\n\nQuestion: {question}\n"
            "Answer from the table. Show any calculation briefly, then end with a line 'Answer: <value>'."))
        answer = answer_line(reply)
        output = f"Chart data:\n{table_markdown(table)}\n\nAnswer: {answer}"
        return output, {"table": table, "answer": answer}


# -- counting -------------------------------------------------------------------------------------------

def _boxes(items: Any) -> list[list[float]]:
    out = []
    for item in items if isinstance(items, list) else []:
        box = item.get("box") if isinstance(item, dict) else item
        if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
            out.append([float(v) for v in box])
        elif box is not None:
            out.append([])  # an instance without a usable box still counts
    return out


class CountingTool(VLMTool):
    """Counting: locate every instance with a box, check the list for misses and duplicates, count it."""

    kind = "counting"
    call_names = ("count", "counting")
    what = "count objects in the image by locating each one"
    sample_input = 'count(image=1, question="How many red circles are there?")'

    async def pipeline(self, session: Session, images: list[ImageInput], question: str) -> tuple[str, dict[str, Any]]:
        size = ", ".join(f"{i.width}x{i.height}" for i in images)
        located = await session.ask_json("locate", (
            f"Question: {question}\nFind every object that the question asks to count (image size {size} "
            'pixels). Reply with one JSON object: {"object": "<what is counted>", "instances": '
            '[{"box": [x0, y0, x1, y1]}, ...]} with one entry per instance, none left out or repeated.'), images)
        what = str(located.get("object") or "object")
        instances = _boxes(located.get("instances"))
        listing = "\n".join(f"{i}: {box}" for i, box in enumerate(instances)) or "(none)"
        checked = await session.ask_json("check", (
            f"Question: {question}\nThese {len(instances)} instances of '{what}' were found (index: box):\n"
            f"{listing}\nLook at the image again. Reply with one JSON object: "
            '{"missing": [[x0, y0, x1, y1], ...], "wrong": [indices that are duplicates or not a match]} '
            "(empty lists when the list is right)."), images)
        missing = _boxes(checked.get("missing"))
        wrong = sorted({int(i) for i in checked.get("wrong") or [] if isinstance(i, int) and 0 <= i < len(instances)})
        kept = [b for i, b in enumerate(instances) if i not in wrong] + missing
        count = len(kept)
        output = (f"Counted {count} {what} ({len(instances)} located, {len(missing)} added, {len(wrong)} removed "
                  f"on checking).\nAnswer: {count}")
        return output, {"object": what, "count": count, "answer": str(count), "instances": instances,
                        "missing": missing, "removed": wrong, "boxes": kept}


# -- geometry -------------------------------------------------------------------------------------------

_STRUCTURE_KEYS = ("points", "segments", "circles", "lengths", "angles", "relations")


def _structure(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: obj.get(k) for k in _STRUCTURE_KEYS if obj.get(k) not in (None, [], {})}
    if not out:
        raise StepError("step 'extract_structure': the JSON names no points, segments, lengths or angles")
    return out


def _summary(structure: dict[str, Any]) -> str:
    parts = []
    if structure.get("points"):
        parts.append("points " + ", ".join(map(str, structure["points"])))
    if isinstance(structure.get("lengths"), dict):
        parts.append(", ".join(f"{k}={v}" for k, v in structure["lengths"].items()))
    if isinstance(structure.get("angles"), dict):
        parts.append(", ".join(f"angle {k}={v}" for k, v in structure["angles"].items()))
    if structure.get("relations"):
        parts.append("; ".join(map(str, structure["relations"])))
    return "; ".join(p for p in parts if p)


class GeometryTool(VLMTool):
    """Geometry: extract the figure's structure, solve from it, check the solution, summarise."""

    kind = "geometry"
    call_names = ("geometry",)
    what = "read a geometry figure (points, lengths, angles) and solve the problem from it"
    sample_input = 'geometry(image=1, question="Find AC.")'

    async def pipeline(self, session: Session, images: list[ImageInput], question: str) -> tuple[str, dict[str, Any]]:
        structure = _structure(await session.ask_json("extract_structure", (
            f"Problem: {question}\nDescribe the geometry figure as one JSON object with the keys "
            '"points" (labels), "segments" (pairs of labels), "circles", "lengths" (e.g. {"AB": 5}), '
            '"angles" (e.g. {"ABC": 90}, degrees) and "relations" (e.g. "AB parallel CD"). Use only what '
            "the figure shows or marks."), images))
        facts = json.dumps(structure, ensure_ascii=False)
        solution = await session.ask("reason", (
            f"Figure: {facts}\nProblem: {question}\nSolve step by step using only these facts and standard "
            "geometry. End with a line 'Answer: <value>'."))
        proposed = answer_line(solution)
        check = await session.ask("check", (
            f"Figure: {facts}\nProblem: {question}\nProposed solution:\n{solution}\n\nCheck every step against "
            "the figure. Reply 'VERDICT: correct' or 'VERDICT: wrong', then a line 'Answer: <value>' with the "
            "right answer."))
        verdict = "wrong" if "verdict: wrong" in check.lower() else "correct" if "verdict: correct" in check.lower() else "unclear"
        checked_answer = answer_line(check) if "answer" in check.lower() else ""
        answer = checked_answer if verdict == "wrong" and checked_answer else proposed
        output = (f"Figure: {_summary(structure)}\nSolution: {solution.strip()}\nCheck: {verdict}"
                  + (f" (corrected from {proposed})" if answer != proposed else "") + f"\nAnswer: {answer}")
        return output, {"structure": structure, "solution": solution, "proposed": proposed, "verdict": verdict,
                        "answer": answer}
