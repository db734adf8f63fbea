"""Build the backend a model spec names."""

from __future__ import annotations

from atlas_router.config import ModelSpec
from atlas_router.models.base import ChatModel
from atlas_router.models.cache import ResponseCache


def build_model(spec: ModelSpec, cache: ResponseCache | None = None) -> ChatModel:
    """An OpenAI-compatible HTTP model or an in-process one, by ``spec.backend``."""
    if spec.backend == "openai":
        from atlas_router.models.openai_http import OpenAIChatModel

        return OpenAIChatModel(spec, cache)
    from atlas_router.models.local import LocalChatModel

    return LocalChatModel(spec, cache)
