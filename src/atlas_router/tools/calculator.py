"""The calculator tool: exact arithmetic and algebra with sympy, safe against code in the expression
(the mathematics and its safety checks: ``calculator_math``; the worker process: ``calculator_worker``).

Input forms (all equivalent):
``calculator(expression="sqrt(2)*pi", operation="evaluate", precision=30)``,
``{"expression": "sqrt(2)*pi", "operation": "evaluate", "precision": 30}``, or a bare ``sqrt(2)*pi``.
"""

from __future__ import annotations

import asyncio

from atlas_router.tools.base import Tool, ToolContext, ToolResult
from atlas_router.tools.calculator_math import (MAX_PRECISION, OPERATIONS, CalculatorError, find_call, parse_checks,
                                                parse_request)
from atlas_router.tools.calculator_worker import ComputeProcess, WorkerTimeout
from atlas_router.tools.settings_check import reject_unknown

class CalculatorTool(Tool):
    """Exact arithmetic and algebra (settings: precision default 15, timeout_s default 10,
    memory_mb default 1024). Computations run in a worker process that is killed on timeout."""

    kind = "calculator"
    mode = "loop"
    call_openers = ("calc", "{")
    sample_input = 'calculator(expression="sqrt(2)*pi", operation="evaluate", precision=30)'

    def __init__(self, spec) -> None:
        super().__init__(spec)
        reject_unknown(self.settings, ("precision", "timeout_s", "memory_mb"))
        self.precision = int(self.settings.get("precision", 15))
        self.timeout_s = float(self.settings.get("timeout_s", 10.0))
        memory_mb = int(self.settings.get("memory_mb", 1024))
        if not 1 <= self.precision <= MAX_PRECISION or self.timeout_s <= 0 or memory_mb < 128:
            raise ValueError("precision must be 1..1000, timeout_s positive and memory_mb at least 128")
        self.worker = ComputeProcess(memory_mb)

    def usage(self) -> str:
        return (
            "You can use a calculator for exact arithmetic and algebra. Call it on its own line:\n"
            'calculator(expression="sqrt(2)*pi", operation="evaluate", precision=20)\n'
            f"operation is one of: {', '.join(OPERATIONS)} (solve takes equations like \"x**2 = 4\"; diff and "
            "integrate take variable=\"x\"). Use ** for powers and ! or factorial() for factorials. "
            "You will get the result back; then continue."
        )

    def extract_call(self, text: str) -> str | None:
        return find_call(text)

    def demonstration(self) -> list[dict[str, str]]:
        """Two calls a small model can imitate: one written out, one taken from a word problem."""
        return [*self.worked_example("What is 2484 * 67?", 'calculator(expression="2484 * 67")', "166428", "166428"),
                *self.worked_example("A crate holds 24 bottles. How many bottles are in 15 crates?",
                                     'calculator(expression="24 * 15")', "360", "360")]

    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        try:
            req = parse_request(tool_input, self.precision)
            parse_checks(req)
            reply = await asyncio.to_thread(self.worker.compute, req, self.timeout_s)
        except CalculatorError as err:
            return ToolResult(ok=False, output="", error=str(err))
        except WorkerTimeout:
            return ToolResult(ok=False, output="", error=f"time limit {self.timeout_s:g}s exceeded")
        if not reply.get("ok"):
            return ToolResult(ok=False, output="", error=str(reply.get("error")))
        data = dict(reply.get("data") or {})
        data.update(operation=req.operation, expression=req.expression, precision=req.precision)
        return ToolResult(ok=True, output=str(reply["output"]), data=data)
