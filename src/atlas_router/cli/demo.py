"""``atlas demo``: the main job on the embedded default pool (collect, fit, evaluate, route, report)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def demo(
    out: str = typer.Option("atlas-demo", "--out", "-o", help="Output directory (records, router, report); reruns resume."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Cost weight a in U = (1-a)·Acc - a·Cost."),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Pair runs in flight while collecting."),
) -> None:
    """Collect on the built-in task suite, fit the cluster router and the baselines, evaluate, report."""
    from atlas_router.eval.demo import run_demo

    results = run_demo(out, pool, alpha=alpha, concurrency=concurrency)
    table = Table(title=f"atlas demo: test queries (a={alpha}), {results['seconds']}s")
    for col in ("router", "accuracy", "cost/query", "calls/query"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for name, r in results["routers"].items():
        table.add_row(name, f"{r['accuracy']:.3f}", f"{r['cost']:.3g}", f"{r['calls']:.2f}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
