"""The prompts a pair runs with: one base instruction, plus the tool's own usage text."""

from __future__ import annotations

from atlas_router.tools.base import Tool

BASE_SYSTEM = (
    "You are a careful problem solver. Keep your reply short and end it with a line 'Final answer: <answer>', "
    "where <answer> is only the number, word or name that was asked for."
)

def system_prompt(tool: Tool) -> str:
    """Base instruction plus how to call the tool (nothing extra for the "none" tool)."""
    usage = tool.usage().strip()
    return f"{BASE_SYSTEM}\n\n{usage}" if usage else BASE_SYSTEM

def observation_message(tool: Tool, observation: str) -> str:
    """The user turn that hands a tool result back to the model: exactly the shape of the tools' worked
    examples (``Tool.worked_example``), because small models follow the example, not an instruction."""
    return observation
