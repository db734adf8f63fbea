"""``atlas sweep``: held-out utility and cluster quality per K and encoder (the paper's Tables 12-13)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from atlas_router.cli.common import load_records, print_json


def sweep(
    records: Path = typer.Option(..., "--records", help="Records directory (from 'atlas import' or 'atlas collect')."),
    k: str = typer.Option("4,8,16,32", "--k", help="Cluster counts, comma-separated."),
    encoders: Optional[str] = typer.Option(None, "--encoders", help="Encoder specs, comma-separated (default: "
                                           "sentence-transformers)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Utility weight of cost, in [0, 1]."),
    test_size: float = typer.Option(0.3, "--test-size", help="Share of queries held out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, k-means and silhouette sampling."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON on standard output (the table goes to "
                                 "standard error)."),
    json_out: Optional[str] = typer.Option(None, "--json-out", help="Write the rows here (and a manifest beside it); "
                                           "- for standard output, as --json."),
) -> None:
    """Fit the cluster router for every K and encoder; print held-out accuracy, cost, utility, silhouette, DB."""
    from rich.console import Console
    from rich.table import Table

    from atlas_router.eval.manifest import run_manifest, write_output
    from atlas_router.eval.sweep import parse_ks, sweep as run_sweep
    from atlas_router.routers.utility import check_alpha

    ks = parse_ks(k)
    check_alpha(alpha)
    specs = [s.strip() for s in encoders.split(",") if s.strip()] if encoders else [None]
    frame = load_records(records)
    result = run_sweep(frame, ks, specs, test_size=test_size, seed=seed, alpha=alpha)
    table = Table(title=f"held-out ({result['test_queries']} queries) at alpha={alpha:g}")
    for col in ("encoder", "K", "accuracy", "cost/query", "utility", "silhouette", "davies-bouldin", "fit s"):
        table.add_column(col, justify="left" if col == "encoder" else "right")

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in result["rows"]:
        table.add_row(r["encoder"], str(r["n_clusters"]), f"{r['accuracy']:.4f}", f"{r['cost']:.3e}",
                      f"{r['utility']:.4f}", num(r["silhouette"], ".4f"), num(r["davies_bouldin"], ".3f"),
                      f"{r['fit_s']:.1f}")
    to_stdout = as_json or json_out == "-"
    Console(width=140, stderr=to_stdout).print(table)
    payload = {"alpha": alpha, "test_queries": result["test_queries"], "rows": result["rows"]}
    if to_stdout:
        print_json(payload)
    if json_out is not None and json_out != "-":
        manifest = run_manifest(
            "sweep", data=result["data"], records_path=records, encoders=result["encoders"], routers=result["routers"],
            seeds={"split": seed, "kmeans": seed, "silhouette_sample": seed},
            settings={"k": ks, "alpha": alpha, "test_size": test_size},
        )
        out, man = write_output(json_out, payload, manifest)
        typer.echo(f"report: {out} (manifest: {man})", err=to_stdout)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
