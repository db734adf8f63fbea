"""OpenAI-compatible chat completions over HTTP: vLLM, SGLang, Ollama, llama.cpp server, OpenAI, ...

Each call has a timeout; 429, 5xx, timeouts, dropped connections and malformed bodies are retried a
bounded number of times with exponential backoff (honouring Retry-After); a semaphore bounds the calls
in flight per model, and every model on the same upstream shares one keep-alive connection pool. Token
usage comes from the response, or is counted with a tokenizer when absent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from atlas_router.config import ModelSpec
from atlas_router.core.http import RETRY_STATUS, backoff_s, retry_after_s
from atlas_router.errors import BackendError
from atlas_router.models import http_clients
from atlas_router.models.base import ChatModel, Completion, Delta, Message, SamplingParams
from atlas_router.models.cache import ResponseCache
from atlas_router.models.tokens import count_message_tokens, count_tokens



class UpstreamRefused(BackendError):
    """The endpoint answered a 4xx other than a retryable one: it is up, but refuses this request."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """A failure worth another try; its message is the cause recorded if all tries fail."""


def _choice(choice: dict[str, Any]) -> Completion:
    """One choice of a response body; tool calls and logprobs are kept as the endpoint sent them."""
    message = choice["message"]
    text = message.get("content") or ""
    if not isinstance(text, str):
        raise TypeError("message.content is not a string")
    tool_calls = message.get("tool_calls") or None
    if tool_calls is not None and not isinstance(tool_calls, list):
        raise TypeError("message.tool_calls is not a list")
    return Completion(text, 0, 0, choice.get("finish_reason"), tool_calls=tool_calls, logprobs=choice.get("logprobs"))


class OpenAIChatModel(ChatModel):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint; request features (tools,
    response_format, n, logprobs, penalties) are forwarded, and the endpoint's own 400 says if it lacks one."""

    features = frozenset({"tools", "response_format", "n", "logprobs", "presence_penalty", "frequency_penalty"})

    def __init__(self, spec: ModelSpec, cache: ResponseCache | None = None) -> None:
        super().__init__(spec, cache)
        assert spec.endpoint is not None
        self.base_url = spec.endpoint.rstrip("/")
        self._sem = asyncio.Semaphore(spec.max_concurrency)
        self._client: http_clients.Upstream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._key = spec.api_key()  # a named but unset key fails now, not on the first call
        self._headers = {"content-type": "application/json"}
        if self._key:
            self._headers["authorization"] = f"Bearer {self._key}"

    def _http(self) -> http_clients.Upstream:
        """The upstream's shared keep-alive pool (see ``http_clients``) for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # clients and semaphores belong to one event loop; callers may use several
            self._loop, self._client = loop, None
            self._sem = asyncio.Semaphore(self.spec.max_concurrency)
        if self._client is None:
            self._client = http_clients.acquire(self.base_url)
        return self._client

    def _payload(self, messages: list[Message], params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.spec.served_id,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        forwarded = {"presence_penalty": params.presence_penalty or None, "frequency_penalty": params.frequency_penalty or None,
                     "n": params.n if params.n > 1 else None, "logprobs": params.logprobs or None,
                     "top_logprobs": params.top_logprobs, "response_format": params.response_format,
                     "tools": params.tools, "tool_choice": params.tool_choice}
        body.update({k: v for k, v in forwarded.items() if v is not None})
        return body

    async def _chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        url = f"{self.base_url}/chat/completions"
        body = self._payload(messages, params)
        last = "no attempt made"
        for attempt in range(self.spec.max_retries + 1):
            delay = 0.0
            try:
                client = self._http()
                async with self._sem:
                    response = await client.post(url, body, self._headers, self.spec.timeout_s)
                return self._parse(response, messages)
            except _Retryable as err:
                last = str(err)
                delay = getattr(err, "retry_after", 0.0)
            except http_clients.UpstreamTimeout:
                last = f"timeout after {self.spec.timeout_s:g}s"
            except http_clients.UpstreamUnreachable as err:
                last = f"connection failed: {err}"
            if attempt < self.spec.max_retries:
                await asyncio.sleep(backoff_s(attempt, delay))
        tries = self.spec.max_retries + 1
        raise BackendError(f"model '{self.name}' at {self.base_url}: {last} ({tries} tries)")

    async def _stream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[Delta]:
        """The reply as the endpoint streams it (server-sent events), so a stream through the gateway is
        live end to end. Requests that need the whole reply (tools, n > 1, logprobs) are answered whole.
        No retries: the gateway falls back to another pair before the first token instead. A stream holds
        one of the upstream's shared connections until its last event (the pool has no cap to starve)."""
        if params.tools or params.n > 1 or params.logprobs:
            async for delta in super()._stream(messages, params):
                yield delta
            return
        body = {**self._payload(messages, params), "stream": True, "stream_options": {"include_usage": True}}
        where = f"model '{self.name}' at {self.base_url}"
        pieces: list[str] = []
        finish, usage = None, {}
        client = self._http()
        try:
            async with self._sem:
                lines = client.stream_lines(f"{self.base_url}/chat/completions", body, self._headers,
                                            self.spec.timeout_s)
                try:
                    response = await anext(lines)
                    if response.status_code != 200:
                        self._parse(response, messages)  # raises for every error status
                        raise BackendError(f"{where}: HTTP {response.status_code} to a streamed request")
                    if response.content:  # an endpoint that ignores "stream" answers whole
                        whole = self._parse(response, messages)
                        yield Delta(whole.text, whole)
                        return
                    async for line in lines:
                        data = line[5:].strip() if line.startswith("data:") else ""
                        if not data:
                            continue
                        if data == "[DONE]":
                            break
                        event = json.loads(data)
                        if event.get("error"):
                            raise BackendError(f"{where}: error while streaming: {str(event['error'])[:300]}")
                        usage = event.get("usage") or usage
                        for choice in event.get("choices") or []:
                            finish = choice.get("finish_reason") or finish
                            text = (choice.get("delta") or {}).get("content") or ""
                            if text:
                                pieces.append(text)
                                yield Delta(text)
                finally:
                    await lines.aclose()
        except _Retryable as err:
            raise BackendError(f"{where}: {err}") from None
        except http_clients.UpstreamTimeout:
            raise BackendError(f"{where}: timeout after {self.spec.timeout_s:g}s") from None
        except http_clients.UpstreamUnreachable as err:
            raise BackendError(f"{where}: connection failed: {err}") from None
        except (json.JSONDecodeError, AttributeError, TypeError) as err:
            raise BackendError(f"{where}: malformed stream event ({type(err).__name__})") from None
        text = "".join(pieces)
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        yield Delta("", Completion(text, prompt if isinstance(prompt, int) else count_message_tokens(messages),
                                   completion if isinstance(completion, int) else count_tokens(text), finish or "stop"))

    def _parse(self, response: http_clients.UpstreamResponse, messages: list[Message]) -> Completion:
        if response.status_code in RETRY_STATUS:
            err = _Retryable(f"HTTP {response.status_code}: {response.text[:200]!r}")
            err.retry_after = retry_after_s(response)  # type: ignore[attr-defined]
            raise err
        if response.status_code >= 400:
            raise UpstreamRefused(f"model '{self.name}': HTTP {response.status_code}: {response.text[:300]}",
                                  response.status_code)
        try:
            data = response.json()
            choices = [_choice(c) for c in data["choices"]]
            first = choices[0]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
            raise _Retryable(f"malformed response body ({type(err).__name__}): {response.text[:200]!r}") from None
        usage = data.get("usage") or {}
        input_tokens = usage.get("prompt_tokens")
        output_tokens = usage.get("completion_tokens")
        if not isinstance(input_tokens, int):
            input_tokens = count_message_tokens(messages)
        if not isinstance(output_tokens, int):
            output_tokens = sum(count_tokens(c.text) for c in choices)
        first.input_tokens, first.output_tokens, first.alternatives = input_tokens, output_tokens, choices[1:]
        return first

    async def ping(self) -> str:
        """List the endpoint's models, then make one tiny call."""
        try:
            r = await self._http().get(f"{self.base_url}/models", self._headers, min(10.0, self.spec.timeout_s))
            served = [m.get("id") for m in r.json().get("data", [])] if r.status_code == 200 else []
        except (http_clients.UpstreamTimeout, http_clients.UpstreamUnreachable, ValueError, AttributeError):
            served = []
        status = await super().ping()
        if served and self.spec.served_id not in served:
            status += f"; note: endpoint lists {served[:5]}, not '{self.spec.served_id}'"
        return status

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client, self._loop = self._client, None, None
            await http_clients.release(self.base_url, client)
