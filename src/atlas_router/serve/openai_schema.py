"""The OpenAI chat-completions wire format: the request schema we validate and the bodies we emit.

Ranges follow OpenAI's API reference (temperature [0, 2], top_p (0, 1], penalties [-2, 2], n >= 1,
top_logprobs [0, 20], at most 4 stop sequences). The body is parsed here rather than by FastAPI so a
broken body gets a sentence, and NaN, Infinity, overflowing numbers (-1e309) and lone UTF-16 surrogates,
which Python's JSON parser accepts but no upstream can take, are refused with a 400 before any model sees
them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atlas_router.core.jsonio import strict_loads

MAX_TOKENS_LIMIT = 1_048_576  # above any context window served today; 1e30 is a mistake, not a request
MAX_N = 128  # OpenAI's documented maximum
_SURROGATE = re.compile("[\ud800-\udfff]")


class RequestError(ValueError):
    """A request the schema refuses; ``param`` names the offending field (OpenAI's ``error.param``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _content_given(self) -> "ChatMessage":
        # only an assistant turn may omit its content (when it calls tools)
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a '{self.role}' message needs content")
        return self


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> "ResponseFormat":
        if self.type == "json_schema" and not isinstance((self.json_schema or {}).get("schema", {}), dict):
            raise ValueError("json_schema.schema must be a JSON Schema object")
        if self.type == "json_schema" and not (self.json_schema or {}).get("name"):
            raise ValueError("json_schema needs a name")
        return self


class ChatRequest(BaseModel):
    """A chat-completions request. Unknown fields are kept (``model_extra``) and not forwarded."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_N)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "ChatRequest":
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4:
            raise RequestError("stop: at most 4 stop sequences", "stop")
        if self.top_logprobs is not None and not self.logprobs:
            raise RequestError("top_logprobs: requires logprobs to be true", "top_logprobs")
        if self.stream_options is not None and not self.stream:
            raise RequestError("stream_options: only allowed when stream is true", "stream_options")
        if self.tool_choice is not None and not self.tools:
            raise RequestError("tool_choice: only allowed when tools are given", "tool_choice")
        if isinstance(self.tool_choice, dict):
            name = ((self.tool_choice.get("function") or {}) if self.tool_choice.get("type") == "function" else {}).get("name")
            if not name:
                raise RequestError("tool_choice: expected 'none', 'auto', 'required' or "
                                   "{'type': 'function', 'function': {'name': ...}}", "tool_choice")
            if name not in {t.function.name for t in self.tools or []}:
                raise RequestError(f"tool_choice: names function '{name}', which is not in tools", "tool_choice")
        return self

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class _NonFinite:
    """Stands in for NaN, Infinity or an overflowing number while the body is parsed, so the error can
    name the field that held it."""

    def __init__(self, text: str) -> None:
        self.text = text[:40]


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return _NonFinite(text) if value in (float("inf"), float("-inf")) else value


def _find_bad(value: Any, path: str) -> tuple[str, str] | None:
    """(path, why) of the first value no upstream can take: a non-finite number or a string (or key)
    holding a lone UTF-16 surrogate; None when there is none."""
    if isinstance(value, _NonFinite):
        return path, f"must be a finite number, not {value.text}"
    if isinstance(value, str):
        return (path, "contains a lone UTF-16 surrogate (not valid Unicode text)") if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if _SURROGATE.search(str(k)):
                return where, "is a key with a lone UTF-16 surrogate (not valid Unicode text)"
            if hit := _find_bad(v, where):
                return hit
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if hit := _find_bad(v, f"{path}[{i}]"):
                return hit
    return None


def parse_json_body(raw: bytes) -> Any:
    """The request body as JSON; RequestError with a sentence for anything no upstream could take."""
    if not raw.strip():
        raise RequestError("request body is empty: send a JSON object with 'model' and 'messages'")
    with contextlib.suppress(ValueError):  # orjson refuses every value _find_bad looks for
        data = strict_loads(raw)
        if isinstance(data, dict):
            return data
    try:  # the careful read: it names what is wrong
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"request body is not UTF-8 (bad byte at offset {err.start})") from None
    try:
        data = json.loads(text, parse_constant=_NonFinite, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        raise RequestError(f"request body is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    bad = _find_bad(data, "")
    if bad is not None:
        where, why = bad
        raise RequestError(f"{where or 'body'}: {why}", re.split(r"[.\[]", where)[0] or None)
    if not isinstance(data, dict):
        raise RequestError(f"request body must be a JSON object, not {type(data).__name__}")
    return data


def parse_chat_request(raw: bytes) -> ChatRequest:
    """A validated ChatRequest from the raw body; RequestError naming the first bad field otherwise."""
    data = parse_json_body(raw)
    try:
        return ChatRequest.model_validate(data)
    except RequestError:
        raise
    except ValidationError as err:
        first = err.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, RequestError):
            raise cause from None
        loc = ".".join(str(p) for p in first.get("loc", ()))
        msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        if first.get("type") == "finite_number":
            msg = "must be a finite number"
        raise RequestError(f"{loc or 'body'}: {msg}", str(first["loc"][0]) if first.get("loc") else None) from None


def choice_body(index: int, text: str | None, finish_reason: str | None, tool_calls: list[dict[str, Any]] | None = None,
                logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    """One choice of a chat.completion: content null when the model only called tools."""
    message: dict[str, Any] = {"role": "assistant", "content": None if tool_calls and not text else (text or ""),
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason or "stop"}


def new_completion_id() -> str:
    """A fresh ``chatcmpl-`` id (24 hex digits, as OpenAI's): the gateway's request ids and record ids
    take this one form, so feedback can name either. 96 random bits from the OS (what ``secrets`` reads),
    without building a UUID."""
    return "chatcmpl-" + os.urandom(12).hex()


def completion_body(model: str, choices: list[dict[str, Any]], input_tokens: int, output_tokens: int,
                    fingerprint: str | None = None, extra: dict[str, Any] | None = None,
                    completion_id: str | None = None) -> dict[str, Any]:
    """A non-streamed chat.completion object."""
    body: dict[str, Any] = {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": choices,
        "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens, "total_tokens": input_tokens + output_tokens},
    }
    if extra:
        body.update(extra)
    return body


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
