"""Pool configuration: one YAML file declaring models and tools, validated with pydantic.

A pool grows by adding entries to ``models`` or ``tools``; nothing else changes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atlas_router.errors import ConfigError

DEFAULT_POOL_PATH = Path(__file__).parent / "resources" / "default_pool.yaml"


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
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"model '{self.name}': environment variable {self.api_key_env} (api_key_env) is not set")
        return key


ToolKind = Literal["none", "python_code", "calculator", "web_search", "prm", "ocr", "chart", "counting", "geometry"]


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
        from atlas_router.errors import UnknownNameError

        for m in self.models:
            if m.name == name:
                return m
        raise UnknownNameError(f"unknown model '{name}'; the pool has: {', '.join(m.name for m in self.models)}")

    def tool(self, name: str) -> ToolSpec:
        from atlas_router.errors import UnknownNameError

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
