"""The pool: the configured models and tools, built lazily, and the pairs they form."""

from __future__ import annotations

import os

from atlas_router.config import PoolConfig, cache_dir, load_pool_config
from atlas_router.models.base import ChatModel
from atlas_router.models.cache import ResponseCache
from atlas_router.models.factory import build_model
from atlas_router.tools.base import Tool
from atlas_router.tools.registry import build_tool


class Pool:
    """Models and tools by name. Backends load on first use, so listing a pool costs nothing."""

    def __init__(self, config: PoolConfig, use_cache: bool | None = None) -> None:
        self.config = config
        enabled = config.cache.enabled if use_cache is None else use_cache
        self.cache = ResponseCache(cache_dir("responses", config.cache.dir)) if enabled else None
        self._models: dict[str, ChatModel] = {}
        self._tools: dict[str, Tool] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, use_cache: bool | None = None) -> "Pool":
        """The pool of a YAML file, or the embedded default pool when no path is given."""
        return cls(load_pool_config(path), use_cache=use_cache)

    def model(self, name: str) -> ChatModel:
        if name not in self._models:
            self._models[name] = build_model(self.config.model(name), self.cache)
        return self._models[name]

    def tool(self, name: str) -> Tool:
        if name not in self._tools:
            self._tools[name] = build_tool(self.config.tool(name))
        return self._tools[name]

    def pairs(self) -> list[tuple[str, str]]:
        return self.config.pairs()

    async def aclose(self) -> None:
        for m in self._models.values():
            await m.aclose()
