"""``atlas collect``: run every pair of a pool on a benchmark, or on a file of unlabelled prompts, into a
record store, resumably. ``--grader`` grades without gold answers (an LLM judge, a reward model, a
reference pair); it is required for ``--prompts``, which have no answers."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from atlas_router.cli.common import load_pool, print_json, run_async
from atlas_router.data.benchmarks import get_benchmark, load_benchmark
from atlas_router.data.graders.judge import build_label_free_grader
from atlas_router.errors import AtlasError
from atlas_router.records import collect as collecting
from atlas_router.records.prompts import prompt_benchmark, read_prompts
from atlas_router.records.store import RecordStore
from atlas_router.records.summary import pair_table


def parse_pairs(spec: str | None, all_pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``m@@t,m2@@t2`` (``*`` allowed on either side) to pairs of the pool; unknown names are errors."""
    if not spec:
        return all_pairs
    chosen: list[tuple[str, str]] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if "@@" not in item:
            raise AtlasError(f"pair '{item}' must be written MODEL@@TOOL")
        m, t = (p.strip() for p in item.split("@@", 1))
        matched = [(pm, pt) for pm, pt in all_pairs if m in ("*", pm) and t in ("*", pt)]
        if not matched:
            raise AtlasError(f"pair '{item}' matches nothing in the pool")
        chosen += [p for p in matched if p not in chosen]
    return chosen


def collect(
    benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Registered benchmark name."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Unlabelled prompts: JSONL/JSON/CSV, or a records directory."),
    grader: Optional[str] = typer.Option(None, "--grader", help="judge:MODEL[@URL] | judge-verdict:MODEL[@URL] | "
                                          "judge-pairwise:MODEL[@URL] | prm:MODEL_ID@URL | reference:MODEL@@TOOL "
                                          "(default: the gold answers)."),
    name: str = typer.Option("prompts", "--name", help="Benchmark name given to --prompts (query ids derive from it)."),
    out: str = typer.Option(..., "--out", "-o", help="Record store directory (created; resumed if it exists)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    split: Optional[str] = typer.Option(None, "--split", help="Benchmark split."),
    path: Optional[str] = typer.Option(None, "--path", help="Local JSONL/JSON/Parquet/CSV copy of the benchmark."),
    limit: Optional[int] = typer.Option(None, "--limit", help="First N examples only."),
    pairs: Optional[str] = typer.Option(None, "--pairs", help="MODEL@@TOOL,... (default: every pair)."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", min=1, help="Pair runs in flight."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run on a Ray cluster: an address, or 'local'."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run every pair on every query of a benchmark or prompt file; rerun after a kill to resume."""
    console = Console(stderr=True)
    if (benchmark is None) == (prompts is None):
        raise AtlasError("give either --benchmark or --prompts")
    if prompts is not None:
        if not grader:
            raise AtlasError("--prompts have no gold answers: give --grader (for example judge:MODEL)")
        if split or path:
            raise AtlasError("--split and --path belong to --benchmark, not --prompts")
        read = read_prompts(prompts, limit=limit, name=name)
        bench, examples = prompt_benchmark(read.name), read.examples
        if read.blank or read.repeated:
            console.print(f"{prompts}: skipped {read.blank} blank and {read.repeated} repeated prompts")
        if not examples:
            raise AtlasError(f"{prompts}: no prompts")
    else:
        bench = get_benchmark(benchmark)
        examples = load_benchmark(benchmark, split=split, path=path, limit=limit)
        if not examples:
            raise AtlasError(f"benchmark '{benchmark}' has no examples (split={split!r}, path={path!r})")
    if grader and ray:
        raise AtlasError("--grader grades in this process; drop --ray")
    the_pool = load_pool(pool)
    chosen = parse_pairs(pairs, the_pool.pairs())
    the_grader = build_label_free_grader(grader, the_pool) if grader else None
    store = RecordStore(out)
    the_plan = collecting.plan(bench, examples, chosen, store)
    console.print(f"{bench.name}: {len(examples)} queries x {len(chosen)} pairs = {the_plan.total} runs; "
                  f"{the_plan.done_before} already in {out}, {len(the_plan.jobs)} to run"
                  + (f"; graded by {the_grader.name}" if the_grader else ""))
    failures = collecting.GradingFailures()
    split_name = split or ""
    with Progress(TextColumn("collect"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, disable=not the_plan.jobs) as progress:
        task = progress.add_task("collect", total=the_plan.total, completed=the_plan.done_before)

        def tick(_record) -> None:
            progress.advance(task)

        if ray:
            added = collecting.collect_ray(the_pool.config, bench, the_plan, store, split_name, ray, on_progress=tick)
        elif the_grader is not None:
            async def graded() -> tuple[int, collecting.GradingFailures]:
                try:
                    return await collecting.collect_graded(the_pool, bench, the_plan, store, split_name, concurrency,
                                                           the_grader, tick)
                finally:
                    await the_pool.aclose()

            added, failures = run_async(graded())
        else:
            async def go() -> int:
                try:
                    return await collecting.collect_local(the_pool, bench, the_plan, store, split_name, concurrency, tick)
                finally:
                    await the_pool.aclose()

            added = run_async(go())
    rows = pair_table(store.load(), benchmark=bench.name)
    if failures.queries:
        console.print(f"[yellow]{failures.queries} queries not graded ({failures.first_error}); rerun to retry them[/]")
    if as_json:
        print_json({"benchmark": bench.name, "added": added, "already_present": the_plan.done_before, "pairs": rows,
                    "grader": the_grader.name if the_grader else f"gold:{bench.grader}",
                    "ungraded_queries": failures.queries})
        if failures.queries:
            raise typer.Exit(1)
        return
    table = Table(title=f"{bench.name}: {added} records added")
    for col in ("pair", "n", "accuracy", "cost/query", "latency_s", "errors"):
        table.add_column(col, justify="left" if col == "pair" else "right")
    for r in rows:
        table.add_row(r["pair"], str(r["n"]), f"{r['accuracy']:.3f}", f"{r['cost']:.2e}", f"{r['latency_s']:.2f}", str(r["errors"]))
    Console().print(table)
    if failures.queries:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("collect")(collect)
