"""In-process models from local weights: llama-cpp-python when installed, else transformers + gguf.

Why two engines: llama.cpp runs a quantised GGUF several times faster on a CPU; transformers needs no
compiler and gives the torch model the RL trainer fine-tunes. Loading a GGUF into transformers
de-quantises every tensor (slow), so the converted model is kept in a cache directory and later loads
take well under a second. Generation runs in a worker thread, one call at a time per model.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from atlas_router.config import ModelSpec, cache_dir
from atlas_router.errors import BackendError
from atlas_router.models.base import ChatModel, Completion, Delta, Message, SamplingParams
from atlas_router.models.cache import ResponseCache
from atlas_router.models.weights import resolve_weights

LLAMA_FEATURES = frozenset({"tools", "response_format", "n", "presence_penalty", "frequency_penalty"})


def converted_dir() -> Path:
    """Where GGUF weights converted for transformers are kept: ``$ATLAS_MODEL_CACHE`` (read now, not at
    import), else ~/.cache/atlas-router/converted."""
    return cache_dir("models")


def llama_cpp_available() -> bool:
    """True when llama-cpp-python is importable (it is an optional extra)."""
    return importlib.util.find_spec("llama_cpp") is not None


def load_transformers(weights: str) -> tuple[Any, Any]:
    """(tokenizer, causal LM) from a GGUF, a local directory or a hub id, converted once and cached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if weights.startswith("package:") or weights.endswith(".gguf") or Path(weights).expanduser().exists():
        path = resolve_weights(weights)
    else:  # a hub id: real users have internet
        return AutoTokenizer.from_pretrained(weights), AutoModelForCausalLM.from_pretrained(weights)
    if path.suffix != ".gguf":
        return AutoTokenizer.from_pretrained(str(path)), AutoModelForCausalLM.from_pretrained(str(path))
    stat = path.stat()
    digest = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    converted = converted_dir() / f"{path.stem}-{digest}"
    if (converted / "config.json").exists():
        return AutoTokenizer.from_pretrained(str(converted)), AutoModelForCausalLM.from_pretrained(str(converted))
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    # The tensors are de-quantised already; drop the GGUF marker so the model saves as plain safetensors.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    tmp = converted.with_name(converted.name + f".tmp{os.getpid()}")
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        os.replace(tmp, converted)
    except OSError:  # a cache we cannot write only costs speed; another process may have written it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (converted / "config.json").exists():
            return tokenizer, model
    # reload the plain copy: the GGUF-loaded object still calls itself quantized (no .float(), no training)
    return AutoTokenizer.from_pretrained(str(converted)), AutoModelForCausalLM.from_pretrained(str(converted))


class LocalChatModel(ChatModel):
    """A model run in this process from local weights.

    With llama.cpp it streams, constrains ``response_format`` with a JSON grammar (a JSON Schema becomes
    a grammar too), applies penalties, answers ``n`` > 1 by sampling n times with seeds seed, seed+1, ...
    and calls functions through llama-cpp-python's ``chatml-function-calling`` handler (grammar-constrained
    arguments; the SmolLM2 family speaks ChatML). Logprobs need a context built with ``logits_all``
    (a vocabulary-sized row per position), so they are not offered."""

    def __init__(self, spec: ModelSpec, cache: ResponseCache | None = None, engine: str | None = None) -> None:
        super().__init__(spec, cache)
        assert spec.weights is not None
        self.engine = engine or ("llama_cpp" if llama_cpp_available() and spec.weights.endswith(".gguf") else "transformers")
        self.features = LLAMA_FEATURES if self.engine == "llama_cpp" else frozenset({"n"})
        self._loaded: Any = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def _load(self) -> Any:
        with self._load_lock:
            if self._loaded is None:
                try:
                    if self.engine == "llama_cpp":
                        from llama_cpp import Llama

                        self._loaded = Llama(
                            model_path=str(resolve_weights(self.spec.weights or "")),
                            n_ctx=4096,
                            n_threads=max(1, len(os.sched_getaffinity(0))),  # honours taskset / CPU sets
                            seed=0,
                            verbose=False,
                        )
                    else:
                        self._loaded = load_transformers(self.spec.weights or "")
                except (OSError, ValueError, RuntimeError) as err:
                    raise BackendError(f"model '{self.name}': cannot load weights {self.spec.weights}: {err}") from None
            return self._loaded

    async def _chat(self, messages: list[Message], params: SamplingParams) -> Completion:
        return await asyncio.to_thread(self._generate, messages, params)

    def _generate(self, messages: list[Message], params: SamplingParams) -> Completion:
        loaded = self._load()
        with self._run_lock:
            runs = []
            for i in range(params.n):  # n > 1: independent samples, each with its own seed
                one = replace(params, n=1, seed=None if params.seed is None else params.seed + i)
                if self.engine == "llama_cpp":
                    runs.append(self._generate_llama(loaded, messages, one))
                else:
                    runs.append(self._generate_transformers(loaded, messages, one))
        first = runs[0]
        first.input_tokens = max(r.input_tokens for r in runs)
        first.output_tokens = sum(r.output_tokens for r in runs)
        first.alternatives = runs[1:]
        return first

    async def _stream(self, messages: list[Message], params: SamplingParams) -> AsyncIterator[Delta]:
        """Tokens as llama.cpp produces them, handed from its worker thread through a queue; closing the
        iterator (a client gone) stops generation at the next token."""
        if self.engine != "llama_cpp" or params.n > 1 or params.tools:
            async for delta in super()._stream(messages, params):
                yield delta
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def work() -> None:
            try:
                for item in self._generate_llama_stream(messages, params, cancelled):
                    loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, which re-raises it
                loop.call_soon_threadsafe(queue.put_nowait, ("error", err))
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        worker = loop.run_in_executor(None, work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                yield value
        finally:
            cancelled.set()
            if worker.done():
                worker.result()

    def _generate_llama_stream(self, messages: list[Message], params: SamplingParams,
                               cancelled: threading.Event) -> Iterator[Delta]:
        from llama_cpp import LogitsProcessorList

        llm = self._load()
        counts = {"prompt": 0, "sampled": 0}

        def count(input_ids: Any, scores: Any) -> Any:  # called once per sampled token; the first sees the prompt
            counts["prompt"] = counts["prompt"] or len(input_ids)
            counts["sampled"] += 1
            return scores

        with self._run_lock:
            pieces: list[str] = []
            finish = None
            for chunk in llm.create_chat_completion(messages=self._text_messages(messages), stream=True,
                                                    logits_processor=LogitsProcessorList([count]),
                                                    **self._llama_kwargs(params)):
                if cancelled.is_set():
                    return
                choice = chunk["choices"][0]
                text = choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
                if text:
                    pieces.append(text)
                    yield Delta(text)
        # the end-of-generation token is sampled but not part of the reply (llama.cpp's usage skips it too)
        output_tokens = counts["sampled"] - (1 if finish == "stop" and counts["sampled"] else 0)
        yield Delta("", Completion("".join(pieces), counts["prompt"], output_tokens, finish or "stop"))

    @staticmethod
    def _text_messages(messages: list[Message]) -> list[dict[str, Any]]:
        """Plain-text turns; a tool result becomes a user turn (the chat templates here know no tool role)."""
        out: list[dict[str, Any]] = []
        for m in messages:
            content = m.get("content") or ""
            if isinstance(content, list):
                content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            role = m.get("role", "user")
            if role in ("tool", "function"):
                role, content = "user", f"Result of the function call: {content}"
            elif role == "developer":
                role = "system"
            turn: dict[str, Any] = {"role": role, "content": str(content)}
            if role == "assistant" and m.get("tool_calls"):
                turn["tool_calls"] = m["tool_calls"]
            out.append(turn)
        return out

    @staticmethod
    def _llama_kwargs(params: SamplingParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            temperature=params.temperature or 0.0,
            top_p=params.top_p or 1.0,
            max_tokens=params.max_tokens,
            seed=params.seed if params.seed is not None else -1,
            stop=list(params.stop) or None,
            presence_penalty=params.presence_penalty or 0.0,
            frequency_penalty=params.frequency_penalty or 0.0,
        )
        fmt = params.response_format or {}
        if fmt.get("type") == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        elif fmt.get("type") == "json_schema":  # OpenAI's shape -> llama-cpp-python's (a schema-derived grammar)
            kwargs["response_format"] = {"type": "json_object", "schema": (fmt.get("json_schema") or {}).get("schema", {})}
        return kwargs

    def _generate_llama(self, llm: Any, messages: list[Message], params: SamplingParams) -> Completion:
        text_messages = self._text_messages(messages)
        if params.tools:
            from llama_cpp.llama_chat_format import chatml_function_calling

            kwargs = self._llama_kwargs(params)
            kwargs.pop("seed")
            choice_arg = params.tool_choice or "auto"
            if choice_arg == "required":  # exactly one function may be called: name it
                names = [t["function"]["name"] for t in params.tools]
                if len(names) != 1:
                    raise BackendError(f"model '{self.name}': tool_choice 'required' with several tools is not "
                                       "supported; name the function in tool_choice")
                choice_arg = {"type": "function", "function": {"name": names[0]}}
            result = chatml_function_calling(llama=llm, messages=text_messages, tools=params.tools,
                                             tool_choice=choice_arg, **kwargs)
        else:
            result = llm.create_chat_completion(messages=text_messages, **self._llama_kwargs(params))
        choice = result["choices"][0]
        usage = result.get("usage", {})
        message = choice["message"]
        tool_calls = [{"id": c["id"], "type": "function", "function": dict(c["function"])}
                      for c in message.get("tool_calls") or []] or None
        return Completion(
            message.get("content") or "",
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
            "tool_calls" if tool_calls else choice.get("finish_reason"),
            tool_calls=tool_calls,
        )

    def _generate_transformers(self, loaded: Any, messages: list[Message], params: SamplingParams) -> Completion:
        import torch

        tokenizer, model = loaded
        enc = tokenizer.apply_chat_template(
            self._text_messages(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        prompt_len = int(enc["input_ids"].shape[1])
        sample = bool(params.temperature and params.temperature > 0)
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "do_sample": sample}
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
            torch.manual_seed(params.seed if params.seed is not None else 0)
        if params.stop:
            kwargs["stop_strings"] = list(params.stop)
            kwargs["tokenizer"] = tokenizer
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new = out[0, prompt_len:]
        text = tokenizer.decode(new, skip_special_tokens=True)
        finish = "length" if len(new) >= (params.max_tokens or 0) else "stop"
        return Completion(text, prompt_len, int(len(new)), finish)
