"""Tool kinds by name: the config's ``kind`` field picks the class; imports stay lazy."""

from __future__ import annotations

import importlib

from atlas_router.config import ToolSpec
from atlas_router.errors import ConfigError
from atlas_router.tools.base import Tool

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


def build_tool(spec: ToolSpec) -> Tool:
    """Instantiate the tool a spec declares; bad settings become a ConfigError naming the tool."""
    target = TOOL_CLASSES.get(spec.kind)
    if target is None:
        raise ConfigError(f"tool '{spec.name}': unknown kind '{spec.kind}'")
    module_name, cls_name = target.split(":")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except ImportError as err:
        raise ConfigError(f"tool '{spec.name}' (kind {spec.kind}) is not available: {err}") from None
    try:
        return cls(spec)
    except (TypeError, ValueError, KeyError) as err:
        raise ConfigError(f"tool '{spec.name}': bad settings: {err}") from None
