"""The python_code tool: the model writes a Python block, the sandbox runs it, stdout goes back."""

from __future__ import annotations

import re

from atlas_router.tools.base import Tool, ToolContext, ToolResult
from atlas_router.tools.sandbox import SandboxLimits, arun_python
from atlas_router.tools.settings_check import reject_unknown

# A fenced block tagged python/py/python3 (or untagged); the closing fence may be missing when the
# model was stopped mid-block, so the last block may run to the end of the text.
_TAGGED = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)
_UNTAGGED = re.compile(r"```[ \t]*\n(.*?)```", re.DOTALL)
_STDERR_TAIL = 1500


def extract_code(text: str) -> str | None:
    """The last ```python block in ``text`` (else the last untagged ``` block), or None."""
    for pattern in (_TAGGED, _UNTAGGED):
        blocks = [b for b in pattern.findall(text) if b.strip()]
        if blocks:
            return blocks[-1].strip("\n")
    return None


class PythonCodeTool(Tool):
    """Runs model-written Python in the sandbox with the pool's limits (settings: timeout_s, memory_mb,
    max_output_bytes, file_mb, disk_mb, require_all_layers)."""

    kind = "python_code"
    mode = "loop"
    call_openers = ("```",)
    sample_input = "import math\nprint(math.factorial(20), sum(i * i for i in range(10)))"

    def __init__(self, spec) -> None:
        super().__init__(spec)
        reject_unknown(self.settings, ("timeout_s", "memory_mb", "max_output_bytes", "file_mb", "disk_mb",
                                       "require_all_layers"))
        self.limits = SandboxLimits.from_settings(self.settings)

    def usage(self) -> str:
        return (
            "You can run Python. To do so, write exactly one fenced block:\n"
            "```python\n# your code\nprint(result)\n```\n"
            "It runs in a sandbox (no network, no files outside its own folder, "
            f"{self.limits.timeout_s:g} s limit) and you get back what it prints, so print every value "
            "you need. Then continue from the output."
        )

    def extract_call(self, text: str) -> str | None:
        return extract_code(text)

    def demonstration(self) -> list[dict[str, str]]:
        return [*self.worked_example("What is the sum of the whole numbers from 1 to 40?",
                                     "```python\nprint(sum(range(1, 41)))\n```", "820", "820"),
                *self.worked_example("Reverse the string 'lemon'.", "```python\nprint('lemon'[::-1])\n```",
                                     "nomel", "nomel")]

    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        result = await arun_python(tool_input, self.limits)
        data = {"error_kind": result.error_kind, "error_line": result.error_line, "exit_code": result.exit_code,
                "stderr": result.stderr, "duration_s": round(result.duration_s, 4), "layers": result.layers}
        if result.ok:
            return ToolResult(ok=True, output=result.stdout, data=data)
        return ToolResult(ok=False, output=result.stdout, error=result.error, data=data)

    def format_observation(self, result: ToolResult) -> str:
        """Failed runs show the user-level traceback tail too: models fix code better with it."""
        if result.ok:
            if not result.output.strip():
                return f"[{self.name} output]\n(the code printed nothing; print the values you need)"
            return super().format_observation(result)
        parts = [f"[{self.name} error]", result.error or "failed"]
        if result.output.strip():
            parts.append(f"stdout:\n{result.output.rstrip()}")
        stderr = str(result.data.get("stderr") or "").strip()
        if stderr and result.data.get("error_kind") in ("exception", "exit", "crash"):
            parts.append(f"stderr:\n{stderr[-_STDERR_TAIL:]}")
        return "\n".join(parts)
