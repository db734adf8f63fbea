"""``atlas ask``: run one question on one (model, tool) pair and print the answer or the record."""

from __future__ import annotations

from typing import List, Optional

import typer

from atlas_router.cli.common import load_pool, print_json, run_async
from atlas_router.execution.runner import run_pair
from atlas_router.errors import AtlasError
from atlas_router.execution.images import load_images
from atlas_router.execution.validate import read_question, validate_question
from atlas_router.tools.multimodal.describe import routing_text


def ask(
    question: str = typer.Argument(..., help="The question, or - to read it from standard input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pool model name (default: the first)."),
    tool: str = typer.Option("none", "--tool", "-t", help="Pool tool name."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole record as JSON."),
    router: str = typer.Option("pair", "--router", help="pair: the --model/--tool pair; rl: a routing policy."),
    policy: Optional[str] = typer.Option(None, "--policy", help="RL policy directory (with --router rl)."),
    image: Optional[List[str]] = typer.Option(None, "--image", "-i", help="An image for the question (path or URL); repeatable."),
) -> None:
    """Run QUESTION on one (model, tool) pair, or let a trained routing policy route it (--router rl)."""
    question = validate_question(read_question(question))
    images = load_images(image or [])  # checked before any work: hostile or broken images fail here
    if router == "rl":
        question = routing_text(question, images)  # the policy and its pairs see the images' descriptions
        from atlas_router.rl.inference import ask_cli

        raise typer.Exit(ask_cli(pool, policy, question, as_json))
    if router != "pair":
        raise AtlasError(f"unknown --router '{router}'; use pair or rl")
    the_pool = load_pool(pool)
    model_name = model or the_pool.config.models[0].name
    the_pool.model(model_name)  # unknown names and missing keys fail before any work
    the_pool.tool(tool)

    async def go():
        try:
            return await run_pair(the_pool, model_name, tool, question, images=images)
        finally:
            await the_pool.aclose()

    record = run_async(go())
    if as_json:
        print_json(record.to_dict())
    else:
        typer.echo(record.answer if not record.error else f"error: {record.error}")
    if record.error:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
