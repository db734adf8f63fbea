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
from pathlib import Path
from typing import Any

from atlas_router.config import ModelSpec
from atlas_router.errors import BackendError
from atlas_router.pool.models.base import ChatModel, Completion, Message, SamplingParams
from atlas_router.pool.models.cache import ResponseCache
from atlas_router.pool.models.weights import resolve_weights

CONVERTED_DIR = Path(os.environ.get("ATLAS_MODEL_CACHE", "~/.cache/atlas-router/converted")).expanduser()


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
    converted = CONVERTED_DIR / f"{path.stem}-{digest}"
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
    """A model run in this process from local weights."""

    def __init__(self, spec: ModelSpec, cache: ResponseCache | None = None, engine: str | None = None) -> None:
        super().__init__(spec, cache)
        assert spec.weights is not None
        self.engine = engine or ("llama_cpp" if llama_cpp_available() and spec.weights.endswith(".gguf") else "transformers")
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
                            n_threads=max(1, os.cpu_count() or 1),
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
            if self.engine == "llama_cpp":
                return self._generate_llama(loaded, messages, params)
            return self._generate_transformers(loaded, messages, params)

    @staticmethod
    def _text_messages(messages: list[Message]) -> list[dict[str, str]]:
        out = []
        for m in messages:
            content = m.get("content") or ""
            if isinstance(content, list):
                content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            out.append({"role": m.get("role", "user"), "content": str(content)})
        return out

    def _generate_llama(self, llm: Any, messages: list[Message], params: SamplingParams) -> Completion:
        result = llm.create_chat_completion(
            messages=self._text_messages(messages),
            temperature=params.temperature or 0.0,
            top_p=params.top_p or 1.0,
            max_tokens=params.max_tokens,
            seed=params.seed if params.seed is not None else -1,
            stop=list(params.stop) or None,
        )
        choice = result["choices"][0]
        usage = result.get("usage", {})
        return Completion(
            choice["message"].get("content") or "",
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
            choice.get("finish_reason"),
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
