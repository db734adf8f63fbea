"""``atlas tool NAME INPUT``: run one tool of the pool alone."""

from __future__ import annotations

from typing import Optional

import typer

from atlas_router.cli.common import load_pool, print_json, run_async
from atlas_router.execution.validate import validate_question


def tool(
    name: str = typer.Argument(..., help="Pool tool name (python-code, calculator, web-search, ...)."),
    tool_input: str = typer.Argument(..., help="The tool's input (code, an expression, a search query)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Run one tool on INPUT and print its output."""
    tool_input = validate_question(tool_input)
    the_tool = load_pool(pool).tool(name)
    result = run_async(the_tool.run(tool_input))
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        typer.echo(result.output)
    else:
        typer.echo(f"error: {result.error}", err=True)
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("tool")(tool)
