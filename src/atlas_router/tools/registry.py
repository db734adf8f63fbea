"""Tool kinds by name: the config's ``kind`` field picks the class; imports stay lazy."""

from __future__ import annotations

from atlas_router.config import TOOL_CLASSES, ToolSpec
from atlas_router.core.lazy import import_object
from atlas_router.errors import ConfigError
from atlas_router.tools.base import Tool


def build_tool(spec: ToolSpec) -> Tool:
    """Instantiate the tool a spec declares; bad settings become a ConfigError naming the tool."""
    target = TOOL_CLASSES.get(spec.kind)
    if target is None:
        raise ConfigError(f"tool '{spec.name}': unknown kind '{spec.kind}'")
    try:
        cls = import_object(target)
    except ImportError as err:
        raise ConfigError(f"tool '{spec.name}' (kind {spec.kind}) is not available: {err}") from None
    try:
        return cls(spec)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"tool '{spec.name}': bad settings: {err}") from None
