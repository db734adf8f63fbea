"""The prompts a pair runs with: one base instruction, plus the tool's own usage text."""

from __future__ import annotations

from atlas_router.tools.base import Tool

BASE_SYSTEM = (
    "You are a careful problem solver. Think step by step, keep it short, and end your reply with a line "
    "'Final answer: <answer>'."
)

CONTINUE_AFTER_TOOL = "Use this result. If you are done, end with a line 'Final answer: <answer>'."


def system_prompt(tool: Tool) -> str:
    """Base instruction plus how to call the tool (nothing extra for the "none" tool)."""
    usage = tool.usage().strip()
    return f"{BASE_SYSTEM}\n\n{usage}" if usage else BASE_SYSTEM


def observation_message(tool: Tool, observation: str) -> str:
    """The user turn that hands a tool result back to the model."""
    return f"{observation}\n\n{CONTINUE_AFTER_TOOL}"
