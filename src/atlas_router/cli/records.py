"""``atlas import llmrouter|routerbench|routellm`` and ``atlas records show|repair``: public routing tables
in, per-benchmark and per-pair summaries out, unreadable parts quarantined."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from atlas_router.cli.common import print_json
from atlas_router.records.importers import ImportResult, import_into, read_llmrouter, read_routellm, read_routerbench
from atlas_router.errors import AtlasError
from atlas_router.records.store import RecordStore

import_app = typer.Typer(help="Import public routing tables into a records directory.", no_args_is_help=True)
records_app = typer.Typer(help="Inspect or repair a records directory.", no_args_is_help=True)

OUT_HELP = "Records directory (created if missing; rows already there are skipped)."
JSON_HELP = "Print the counts as JSON."


def _report(result: ImportResult, as_json: bool) -> None:
    if as_json:
        print_json(result.summary())
    else:
        typer.echo("\n".join(result.lines()))


@import_app.command("llmrouter")
def import_llmrouter(
    scores: Path = typer.Option(..., "--scores", help="LLMRouter/RouterDC table: [{question, scores: {model: score}}]."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Query JSONL (task_name, query, ground_truth, ...)."),
    models: Optional[Path] = typer.Option(None, "--models", help="Model list with prices (default_llm.json)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Import an LLMRouter (or RouterDC) score table; cost is estimated from prices (see the module docs)."""
    _report(import_into(read_llmrouter(scores, queries, models), out), as_json)


@import_app.command("routerbench")
def import_routerbench(
    files: list[Path] = typer.Argument(..., help="RouterBench tables (.csv, .parquet, or .pkl with --trust-pickle)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Read .pkl tables: a pickle can run code, so "
                                                                    "only for files from a source you trust."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Import RouterBench tables: per-model scores, responses and total costs."""
    _report(import_into(read_routerbench(files, trust_pickle=trust_pickle), out), as_json)


@import_app.command("routellm")
def import_routellm(
    files: list[Path] = typer.Argument(..., help="RouteLLM response CSVs (prompt, MODEL, MODEL_response)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="Benchmark name (default: from the file name)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Import RouteLLM correctness tables (True/False per model)."""
    _report(import_into(read_routellm(files, benchmark), out), as_json)


def _num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def overview(store: RecordStore) -> dict[str, Any]:
    """Records, distinct queries, and per (benchmark, model, tool): count, mean score, mean cost."""
    df = store.load(["query_id", "benchmark", "model", "tool", "score", "cost"])
    groups = []
    if not df.empty:
        g = df.groupby(["benchmark", "model", "tool"], sort=True)
        table = g.agg(count=("score", "size"), mean_score=("score", "mean"), mean_cost=("cost", "mean")).reset_index()
        groups = [
            {"benchmark": r.benchmark, "model": r.model, "tool": r.tool, "count": int(r.count),
             "mean_score": _num(r.mean_score), "mean_cost": _num(r.mean_cost)}
            for r in table.itertuples(index=False)
        ]
    return {
        "path": str(store.path), "rows": int(len(df)), "queries": int(df["query_id"].nunique()),
        "benchmarks": int(df["benchmark"].nunique()), "pairs": int(len(df[["model", "tool"]].drop_duplicates())),
        "groups": groups,
    }


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _require_store(directory: Path) -> None:
    if not (directory / "meta.json").is_file():
        raise AtlasError(f"{directory}: not a records directory (no meta.json); create one with 'atlas import' "
                         "or 'atlas collect'")


@records_app.command("show")
def show(
    directory: Path = typer.Argument(..., help="Records directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Per benchmark and (model, tool) pair: record count, mean score and mean cost."""
    _require_store(directory)
    summary = overview(RecordStore(directory))
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"{summary['path']}: {summary['rows']} records, {summary['queries']} queries, "
                        f"{summary['pairs']} pairs")
    for col, justify in (("benchmark", "left"), ("model", "left"), ("tool", "left"), ("count", "right"),
                         ("mean score", "right"), ("mean cost", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in summary["groups"]:
        table.add_row(r["benchmark"], r["model"], r["tool"], str(r["count"]), _fmt(r["mean_score"], 3),
                      _fmt(r["mean_cost"], 6))
    Console(width=160).print(table)


@records_app.command("repair")
def repair(
    directory: Path = typer.Argument(..., help="Records directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Move unreadable parts to DIR/quarantine and keep every readable row (healthy parts are untouched)."""
    _require_store(directory)
    report = RecordStore(directory).repair()
    if as_json:
        print_json(report.summary())
        return
    if not report.quarantined:
        typer.echo(f"{directory}: all {report.parts} parts readable; nothing to repair ({report.rows} records)")
        return
    lost = "unknown (no readable footer)" if report.rows_lost is None else str(report.rows_lost)
    typer.echo(f"{directory}: moved {len(report.quarantined)} of {report.parts} parts to "
               f"{directory / 'quarantine'} ({', '.join(report.quarantined)})")
    typer.echo(f"  rows kept from them: {report.rows_kept}; rows lost: {lost}; records now: {report.rows}")


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")
    app.add_typer(records_app, name="records")
