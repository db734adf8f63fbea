"""Streaming through tool pairs: the answer's text leaves while the model writes it, a tool call never does,
and the stream ends with the same text and tokens as the run it streams (the real SmolLM2 and tools)."""

from __future__ import annotations

import asyncio

from atlas_router.execution.runner import run_pair, stream_pair


def test_text_is_shown_up_to_where_a_call_could_begin(local_pool):
    calc, code, search = local_pool.tool("calculator"), local_pool.tool("python-code"), local_pool.tool("web-search")
    assert calc.shown_while_writing("Final answer: 42") == len("Final answer: 42")
    assert calc.shown_while_writing("I will use calculator(expression=") == len("I will use ")
    assert calc.shown_while_writing("Let me cal") == len("Let me ")  # could still become calc(...)
    assert calc.shown_while_writing('{"expression": "2+2"}') == 0
    assert code.shown_while_writing("Here is code:\n``") == len("Here is code:\n")
    assert code.shown_while_writing("Once upon a time") == len("Once upon a time")
    assert search.shown_while_writing("<SEARCH>capital") == 0 and search.shown_while_writing("Paris is") == 7  # "s" may begin "search"
    # a tool without openers cannot tell: nothing is shown until its turn is complete
    assert local_pool.tool("none").shown_while_writing("anything") == 0


def _streamed(pool, tool: str, question: str):
    async def go():
        pieces, last, busy = [], None, []
        async for delta in stream_pair(pool, "smollm2-135m", tool, question):
            if delta.text:
                pieces.append(delta.text)
                busy.append(pool.model("smollm2-135m")._run_lock.locked())
            last = delta
        return pieces, last, busy
    return asyncio.run(go())


def test_a_tool_loop_streams_its_final_answer_and_never_its_call(local_pool):
    """Calculator on a product: the call turn is held back, the answer after the result is streamed; the
    stream's text, tokens and finish reason are the run's (greedy decoding: the same run twice)."""
    question = "What is 7321 * 58?"
    record = asyncio.run(run_pair(local_pool, "smollm2-135m", "calculator", question))
    assert record.error is None and record.tool_calls and record.answer == "424618"
    pieces, last, _ = _streamed(local_pool, "calculator", question)
    text = "".join(pieces)
    assert text == record.response and "calculator(" not in text and "expression" not in text
    c = last.completion
    assert (c.text, c.input_tokens, c.output_tokens) == (record.response, record.input_tokens, record.output_tokens)


def test_prose_from_a_tool_pair_streams_while_the_model_is_still_writing(local_pool):
    pieces, last, busy = _streamed(local_pool, "python-code", "Write a long story about a dragon and a knight.")
    assert len(pieces) > 20 and busy[0]  # token pieces, the first before the model had finished
    assert "".join(pieces) == last.completion.text and last.completion.output_tokens > 20
