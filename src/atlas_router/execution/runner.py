"""Pair execution: drive one model with one tool on one question, and run many such jobs at once.

The tool's ``mode`` decides the shape of the run: ``direct`` is a single call, ``loop`` lets the model
call the tool up to ``max_tool_calls`` times (each result fed back as a user turn), ``best_of_n`` lets
the tool sample the model several times and choose. Whatever fails, a PairRecord comes back with the
cause in ``error``: no record is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from atlas_router.core.answers import extract_answer
from atlas_router.core.images import (ImageInput, ImageSource, content_text, load_images, redact_images,
                                      to_content_parts, with_text)
from atlas_router.execution.prompts import observation_message, system_prompt
from atlas_router.execution.record import PairRecord
from atlas_router.errors import AtlasError
from atlas_router.models.base import ChatModel, Completion, Delta, SamplingParams
from atlas_router.pool.pool import Pool
from atlas_router.tools.base import Tool, ToolContext
from atlas_router.tools.multimodal.describe import describe_image

MAX_TOOL_CALLS = 3
TextSink = Callable[[str], None]  # receives an answer's text piece by piece as it is written


def upstream_fault(error: str) -> bool:
    """A run's error says the model's endpoint failed (not the tool or the question): a fault for the model's
    circuit breaker."""
    return error.startswith(("BackendError", "TimeoutError"))


class PairFailed(AtlasError):
    """A streamed run that ended in an error; ``record`` holds the cause (as ``run_pair`` would return it)."""

    def __init__(self, record: PairRecord) -> None:
        super().__init__(record.error or "failed")
        self.record = record


@dataclass(frozen=True)
class PairJob:
    """One unit of work: a question for a pair. ``key`` is carried through to the callback."""

    model: str
    tool: str
    question: str
    key: Any = None
    images: tuple[Any, ...] = ()  # paths, URLs or ImageInputs sent with the question


class _Usage:
    """Tokens and calls summed over every model call of a run."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.input_tokens = 0
        self.output_tokens = 0
        self.calls = 0

    def add(self, c: Completion) -> None:
        self.input_tokens += c.input_tokens
        self.output_tokens += c.output_tokens
        self.calls += 1

    def fill(self, record: PairRecord) -> None:
        record.input_tokens, record.output_tokens, record.calls = self.input_tokens, self.output_tokens, self.calls
        record.cost = self.model.cost(self.input_tokens, self.output_tokens)


async def _streamed_turn(model: ChatModel, tool: Tool, messages: list[dict[str, Any]], params: SamplingParams | None,
                         may_call: bool, on_text: TextSink) -> Completion:
    """One model turn, its text handed to ``on_text`` as it is written: up to where a tool call could begin
    while the turn is open, the rest once it is complete and calls no tool (a call is never shown)."""
    text, shown, completion = "", 0, None
    async for delta in model.stream(messages, params):
        text += delta.text
        completion = delta.completion or completion
        upto = tool.shown_while_writing(text) if may_call else len(text)
        if upto > shown:
            on_text(text[shown:upto])
            shown = upto
    if completion is None:
        raise AtlasError(f"model '{model.name}' ended its stream without a reply")
    if shown < len(completion.text) and not (may_call and tool.extract_call(completion.text)):
        on_text(completion.text[shown:])
    return completion


async def _run_loop(model: ChatModel, tool: Tool, messages: list[dict[str, Any]], record: PairRecord,
                    usage: _Usage, params: SamplingParams | None, max_tool_calls: int, images: list[Any],
                    on_text: TextSink | None = None) -> str:
    context = ToolContext(question=record.question, model=model, messages=messages, images=images)
    for step in range(max_tool_calls + 1):
        may_call = tool.mode == "loop" and step < max_tool_calls
        if on_text is None:
            completion = await model.chat(messages, params)
        else:
            completion = await _streamed_turn(model, tool, messages, params, may_call, on_text)
        usage.add(completion)
        messages.append({"role": "assistant", "content": completion.text})
        call = tool.extract_call(completion.text) if may_call else None
        if call is None:
            record.finish_reason = completion.finish_reason
            return completion.text
        result = await tool.run(call, context)
        record.tool_calls.append({"tool": tool.name, "input": call, **result.to_dict()})
        messages.append({"role": "user", "content": observation_message(tool, tool.format_observation(result))})
    return messages[-1]["content"]


async def _run_best_of_n(model: ChatModel, tool: Any, messages: list[dict[str, Any]], record: PairRecord,
                         usage: _Usage, images: list[Any]) -> str:
    context = ToolContext(question=record.question, model=model, messages=messages, images=images)
    best = await tool.best_of_n(messages, context)
    for c in best.candidates:
        usage.add(c)
    record.tool_calls.append({
        "tool": tool.name, "input": record.question, "ok": True, "method": best.method,
        "scores": list(best.scores), "chosen": best.chosen_index,
        "candidates": [c.text for c in best.candidates],
    })
    chosen = best.candidates[best.chosen_index].text
    messages.append({"role": "assistant", "content": chosen})
    return chosen


def pair_messages(tool: Tool, conversation: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a pair starts from: its own system prompt (a caller's system turns appended to it), the tool's
    demonstration, then the conversation's other turns as they are."""
    extra = [content_text(m.get("content") or "") for m in conversation if m.get("role") in ("system", "developer")]
    system = "\n\n".join([system_prompt(tool), *[e for e in extra if e.strip()]])
    turns = [dict(m) for m in conversation if m.get("role") not in ("system", "developer")]
    return [{"role": "system", "content": system}, *tool.demonstration(), *turns]


async def run_pair(pool: Pool, model: str, tool: str, question: str, *,
                   params: SamplingParams | None = None, max_tool_calls: int = MAX_TOOL_CALLS,
                   images: Sequence[Any] | None = None,
                   conversation: Sequence[dict[str, Any]] | None = None,
                   on_text: TextSink | None = None) -> PairRecord:
    """Run ``question`` on (model, tool). Unknown names raise; every run-time failure is recorded.

    ``conversation`` (chat turns whose last user turn asks ``question``) replaces the single question turn.
    ``images`` go into the last user message (its text is ``question``): as image parts for vision models, as descriptions for
    text-only ones; tools see them in ``ToolContext.images``. ``on_text`` receives the answer's text as
    the model writes it (direct and tool-loop pairs; best-of-n chooses at the end, so it gets the chosen
    text then); ``stream_pair`` wraps this for streamed replies."""
    chat_model, the_tool = pool.model(model), pool.tool(tool)
    record = PairRecord(model=model, tool=tool, question=question)
    usage = _Usage(chat_model)
    messages = pair_messages(the_tool, conversation or [{"role": "user", "content": question}])
    start = time.perf_counter()
    loaded: list[Any] = []
    try:
        if images:
            # in a thread: fetching URLs and describing images (OCR) must not stall other pairs
            asking = last_user(messages)
            loaded, messages[asking]["content"] = await asyncio.to_thread(user_content, question, images,
                                                                          chat_model.spec.vision)
        if the_tool.prefetch and the_tool.mode == "loop":
            context = ToolContext(question=question, model=chat_model, messages=messages, images=loaded)
            result = await the_tool.run(question, context)
            record.tool_calls.append({"tool": the_tool.name, "input": question, "prefetch": True, **result.to_dict()})
            asked = content_text(messages[-1]["content"])
            messages[-1]["content"] = with_text(messages[-1]["content"],
                                                f"{the_tool.format_observation(result)}\n\nQuestion: {asked}")
        if the_tool.mode == "best_of_n":
            final = await _run_best_of_n(chat_model, the_tool, messages, record, usage, loaded)
            if on_text is not None:
                on_text(final)
        else:
            final = await _run_loop(chat_model, the_tool, messages, record, usage, params, max_tool_calls, loaded,
                                    on_text)
        record.response = final
        record.answer = extract_answer(final)
    except Exception as err:  # the run boundary: a failure becomes the record's error, never a lost record
        record.error = f"{type(err).__name__}: {err}"
    record.latency_s = time.perf_counter() - start
    record.transcript = redact_images(messages) if loaded else messages
    usage.fill(record)
    return record


async def stream_pair(pool: Pool, model: str, tool: str, question: str, *, params: SamplingParams | None = None,
                      conversation: Sequence[dict[str, Any]] | None = None,
                      images: Sequence[Any] | None = None) -> AsyncIterator[Delta]:
    """``run_pair`` as a stream: Deltas of the answer's text as the model writes it, then a last Delta whose
    completion carries the whole run's tokens and finish reason (its cost is the model's price of them).
    A run that fails raises AtlasError, before any text when it fails that early (the caller can still
    try another pair)."""
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    task = asyncio.create_task(run_pair(pool, model, tool, question, params=params, conversation=conversation,
                                        images=images, on_text=pieces.put_nowait))
    task.add_done_callback(lambda _: pieces.put_nowait(None))
    try:
        while (piece := await pieces.get()) is not None:
            if piece:
                yield Delta(piece)
        record = task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if record.error:
        raise PairFailed(record)
    yield Delta("", Completion(record.response, record.input_tokens, record.output_tokens,
                               record.finish_reason or "stop"))


async def run_pairs(pool: Pool, jobs: Iterable[PairJob], *, concurrency: int = 8,
                    on_done: Callable[[PairJob, PairRecord], None] | None = None) -> list[PairRecord]:
    """Run many jobs with at most ``concurrency`` in flight; results come back in job order.

    ``concurrency`` workers take the next job as they finish one: no task or semaphore waiter per job,
    so a million jobs cost a million records, not a million pending coroutines."""
    job_list = list(jobs)
    results: list[PairRecord | None] = [None] * len(job_list)
    next_index = iter(range(len(job_list)))

    async def worker() -> None:
        for i in next_index:  # shared iterator: each index goes to exactly one worker
            job = job_list[i]
            record = await run_pair(pool, job.model, job.tool, job.question, images=job.images or None)
            results[i] = record
            if on_done is not None:
                on_done(job, record)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(job_list))))))
    return cast(list[PairRecord], results)  # every index was filled, or gather raised


def last_user(messages: Sequence[dict[str, Any]]) -> int:
    """Index of the last user message (the one a question's images belong to); the last message when none is."""
    return max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=len(messages) - 1)


def completion_record(model: ChatModel, tool: str, question: str, turns: list[dict[str, Any]], c: Completion,
                      latency_s: float) -> PairRecord:
    """The record of a direct pair answered by one model call (what ``run_pair`` would have recorded)."""
    record = PairRecord(model=model.name, tool=tool, question=question, answer=extract_answer(c.text),
                        response=c.text, input_tokens=c.input_tokens, output_tokens=c.output_tokens,
                        cost=model.cost(c.input_tokens, c.output_tokens), latency_s=latency_s, calls=1,
                        finish_reason=c.finish_reason)
    record.transcript = redact_images([*turns, {"role": "assistant", "content": c.text}])
    return record


def user_content(question: str, images: Sequence[ImageSource], vision: bool, **options: Any) -> tuple[list[ImageInput], Any]:
    """The checked images and the first user message's content for a model: content parts (text, then
    the images as data URLs) for a vision model, the question plus one ``[image: ...]`` description per
    image for a text-only model (which would fail or ignore image parts)."""
    loaded = load_images(images, **options)
    if not loaded:
        return [], question
    if vision:
        return loaded, to_content_parts(question, loaded)
    return loaded, "\n\n".join([question, *(describe_image(img) for img in loaded)])
