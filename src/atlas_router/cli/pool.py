"""``atlas pool check``: validate the config, ping each model, run each tool once."""

from __future__ import annotations

import asyncio
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from atlas_router.cli.common import load_pool, print_json, run_async
from atlas_router.pool.pool import Pool
from atlas_router.tools.base import ToolContext

pool_app = typer.Typer(help="Inspect and check the pool.", no_args_is_help=True)


async def check_pool(pool: Pool) -> list[dict[str, str]]:
    """One row per model and tool: ok or the cause of failure."""
    rows: list[dict[str, str]] = []

    async def model_row(name: str) -> dict[str, str]:
        try:
            return {"kind": "model", "name": name, "ok": "yes", "detail": await pool.model(name).ping()}
        except Exception as err:
            return {"kind": "model", "name": name, "ok": "no", "detail": f"{type(err).__name__}: {err}"}

    async def tool_row(name: str) -> dict[str, str]:
        try:
            t = pool.tool(name)
            # tools that sample the pair's model (prm) are checked with the pool's first model
            context = ToolContext(question=t.sample_input, model=pool.model(pool.config.models[0].name))
            r = await t.run(t.sample_input, context)
            detail = (r.output.strip().splitlines() or [""])[0][:80] if r.ok else (r.error or "")
            return {"kind": "tool", "name": name, "ok": "yes" if r.ok else "no", "detail": detail}
        except Exception as err:
            return {"kind": "tool", "name": name, "ok": "no", "detail": f"{type(err).__name__}: {err}"}

    rows += await asyncio.gather(*(model_row(m.name) for m in pool.config.models))
    rows += await asyncio.gather(*(tool_row(t.name) for t in pool.config.tools))
    await pool.aclose()
    return rows


@pool_app.command("check")
def check(
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Validate the pool config, ping every model and run every tool once."""
    the_pool = load_pool(pool)
    rows = run_async(check_pool(the_pool))
    if as_json:
        print_json({"source": the_pool.config.source, "pairs": len(the_pool.pairs()), "checks": rows})
    else:
        table = Table(title=f"pool {the_pool.config.source} ({len(the_pool.pairs())} pairs)")
        for col in ("kind", "name", "ok", "detail"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["kind"], r["name"], "[green]yes[/]" if r["ok"] == "yes" else "[red]no[/]", r["detail"])
        Console().print(table)
    if any(r["ok"] != "yes" for r in rows):
        raise typer.Exit(1)


@pool_app.command("show")
def show(pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool).")) -> None:
    """List the models, tools and the pairs they form."""
    cfg = load_pool(pool).config
    print_json({
        "models": [{"name": m.name, "backend": m.backend, "price": m.price.model_dump(), "description": m.description} for m in cfg.models],
        "tools": [{"name": t.name, "kind": t.kind, "description": t.description} for t in cfg.tools],
        "pairs": [f"{m}@@{t}" for m, t in cfg.pairs()],
    })


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="pool")
