"""``atlas demo``: the main job on the embedded default pool (records, fit, evaluate, live answers, report)."""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table


def demo(
    out: str = typer.Option("atlas-demo", "--out", "-o", help="Output directory (router, results, report)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    records: Optional[List[str]] = typer.Option(None, "--records",
                                                help="Records to replay: store directories or .parquet files, repeatable; "
                                                     "the first holding a (query, pair) wins (default: the shipped ones)."),
    collect: bool = typer.Option(False, "--collect", help="Collect the records live into OUT/records (resumable)."),
    refit: bool = typer.Option(False, "--refit", help="Also write the records, router and manifest that ship with the package."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", min=0.0, max=1.0,
                                              help="Operating point: the cheapest pair within this many accuracy "
                                                   "points of the best (default 0.02)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.0, max=1.0,
                                          help="Operating point as a cost weight a in U = (1-a)·Acc - a·Cost instead."),
    llm_routers: bool = typer.Option(False, "--llm-routers", help="Also fit the zero-/few-shot LLM routers (slow on CPU)."),
    live: bool = typer.Option(True, "--live/--no-live", help="Answer a few fresh questions live through the routed pair."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Pair runs in flight while collecting."),
) -> None:
    """Replay the shipped records (or --collect live), fit the routers, evaluate, answer live, report."""
    from atlas_router.errors import AtlasError
    from atlas_router.eval.demo import run_demo
    from atlas_router.routers.operating_point import DEFAULT_TOLERANCE, OperatingPoint

    if tolerance is not None and alpha is not None:
        raise AtlasError("give --tolerance or --alpha, not both")
    point = OperatingPoint(tolerance=None, alpha=alpha) if alpha is not None else OperatingPoint(
        tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)
    results = run_demo(out, pool, records=records, collect=collect, refit=refit, point=point,
                       llm_routers=llm_routers, live=live, concurrency=concurrency)
    table = Table(title=f"atlas demo: {results['records']['test_queries']} test queries "
                        f"(atlas-cluster: {results['operating_point']}), {results['seconds']}s")
    for col in ("router", "accuracy", "cost/query", "calls/query"):
        table.add_column(col, justify="left" if col == "router" else "right")
    for name, r in results["routers"].items():
        table.add_row(name, f"{r['accuracy']:.3f}", f"{r['cost']:.3g}", f"{r['calls']:.2f}")
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
