"""``atlas tool NAME INPUT``: run one tool of the pool alone."""

from __future__ import annotations

from typing import Optional

import typer

from atlas_router.cli.common import load_pool, print_json, run_async
from atlas_router.core.images import load_image
from atlas_router.execution.validate import validate_question
from atlas_router.tools.base import ToolContext


def tool(
    name: str = typer.Argument(..., help="Pool tool name (python-code, calculator, web-search, ...)."),
    tool_input: str = typer.Argument(..., help="The tool's input (code, an expression, a search query; an image path for image tools)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    question: Optional[str] = typer.Option(None, "--question", "-q", help="Image tools: the question about the image."),
) -> None:
    """Run one tool on INPUT and print its output."""
    the_tool = load_pool(pool).tool(name)
    if getattr(the_tool, "input_kind", "text") == "image":  # INPUT is an image path or URL, checked here
        asked = validate_question(question) if question else ""
        context = ToolContext(question=asked, images=[load_image(tool_input)])
        result = run_async(the_tool.run(asked, context))
    else:
        result = run_async(the_tool.run(validate_question(tool_input)))
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
