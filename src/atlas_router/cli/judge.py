"""``atlas judge-agreement``: how well a label-free grader agrees with gold labels, and what it does to routing.

Reads a record store whose records hold replies and gold scores (``atlas collect --benchmark``, or
``atlas records import routellm``), regrades a sample of its queries with ``--grader``, prints label and
preference agreement, and fits routers on the judge's grades and on the gold grades of the same train
queries, both evaluated on the gold grades of the same test queries.
"""

from __future__ import annotations

import math
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from atlas_router.cli.common import load_pool, print_json
from atlas_router.errors import AtlasError


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def judge_agreement(
    records: str = typer.Option(..., "--records", help="Record store with replies and gold scores."),
    grader: str = typer.Option(..., "--grader", help="judge:MODEL[@URL] | judge-verdict:MODEL[@URL] | judge-pairwise:MODEL[@URL] | prm:MODEL_ID@URL | reference:MODEL@@TOOL."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML holding the judge model (default: the embedded pool)."),
    limit: int = typer.Option(40, "--limit", min=0, help="Queries sampled (seeded); 0 for all."),
    seed: int = typer.Option(0, "--seed"),
    routers: str = typer.Option("atlas-cluster,best-single", "--routers", help="Routers fitted on judge vs gold grades ('' for none)."),
    test_size: float = typer.Option(0.3, "--test-size", help="Held-out fraction of the sampled queries."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder spec of the embedding routers."),
    concurrency: int = typer.Option(2, "--concurrency", "-c", min=1, help="Queries graded at once."),
    out: Optional[str] = typer.Option(None, "--out", help="Also write the judge-graded records to this store."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Regrade gold-graded records with GRADER; print its agreement with the gold labels and its effect on routing."""
    from atlas_router.cli.common import load_records
    from atlas_router.eval.judge_agreement import (
        compare_routers, judge_records, label_agreement, preference_agreement, sample_queries,
    )
    from atlas_router.data.graders.judge import build_label_free_grader

    gold = sample_queries(load_records(records, "--records"), limit or None, seed)
    the_grader = build_label_free_grader(grader, load_pool(pool))
    console = Console(stderr=True)
    n_queries = int(gold["query_id"].nunique())
    with Progress(TextColumn(f"grading with {the_grader.name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("grade", total=n_queries)
        judged = judge_records(gold, the_grader, concurrency=concurrency, on_done=lambda: progress.advance(task))
    if out:
        from atlas_router.records.store import RecordStore

        RecordStore(out).append(judged)
    report = {"records": records, "grader": the_grader.name, "queries": n_queries, "seed": seed,
              "labels": label_agreement(gold, judged), "preferences": preference_agreement(gold, judged)}
    names = [r.strip() for r in routers.split(",") if r.strip()]
    if names:
        if n_queries < 4:
            raise AtlasError("comparing routers needs at least 4 queries (--limit)")
        from atlas_router.routers.encoders import build_encoder

        report["routing"] = compare_routers(gold, judged, names, test_size=test_size, seed=seed,
                                            encoder=build_encoder(encoder) if encoder else None)
    if as_json:
        print_json(report)
        return
    print_report(report)


def print_report(report: dict) -> None:
    """The agreement report as text and a table (also used by bench/judge_agreement.py)."""
    console = Console()
    lab, pref = report["labels"], report["preferences"]
    console.print(f"{report['grader']} on {report['queries']} queries of {report['records']}:")
    console.print(f"  labels: {lab['covered']}/{lab['n']} replies graded (coverage {_f(lab['coverage'])}); "
                  f"accuracy {_f(lab['accuracy'])} vs majority class {_f(lab['majority_rate'])}; "
                  f"kappa {_f(lab['kappa'])}; AUC {_f(lab['auc'])}; "
                  f"judge says correct {_f(lab['judge_positive_rate'])}, gold {_f(lab['gold_positive_rate'])}")
    console.print(f"  preferences: {_f(pref['agreement'])} agreement on {pref['decided']} of {pref['pairs']} "
                  "gold-separated reply pairs")
    if lab["covered"] == 0:
        console.print("  note: the grader gave no readable verdict on any reply; nothing can be fitted on its grades")
    elif lab["distinct_judge_scores"] <= 1:
        console.print("  note: the grader gave every reply the same grade, so it separates nothing; routers fitted "
                      "on its grades choose by their tie-break")
    routing = report.get("routing")
    if routing:
        t = Table(title=f"routers fitted on judge vs gold grades ({routing['train_queries']} train queries), "
                        f"evaluated on gold grades of {routing['test_queries']} test queries")
        for col in ("router", "gold-fitted accuracy", "judge-fitted accuracy", "gold-fitted cost", "judge-fitted cost"):
            t.add_column(col, justify="left" if col == "router" else "right")
        for name, r in routing["routers"].items():
            t.add_row(name, _f(r["gold"]["accuracy"], 4), _f(r["judge"]["accuracy"], 4),
                      _f(r["gold"]["cost"], 3), _f(r["judge"]["cost"], 3))
        console.print(t)


def register(app: typer.Typer) -> None:
    app.command("judge-agreement")(judge_agreement)
