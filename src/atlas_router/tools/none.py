"""The "none" tool: the model answers alone."""

from __future__ import annotations

from atlas_router.tools.base import Tool, ToolContext, ToolResult


class NoTool(Tool):
    """No tool at all; ``run`` echoes its input so ``atlas tool none`` still says something useful."""

    kind = "none"
    mode = "direct"
    sample_input = "hello"

    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        return ToolResult(ok=True, output=tool_input)
