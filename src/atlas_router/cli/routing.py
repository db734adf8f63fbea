"""``atlas fit``, ``atlas route`` and ``atlas eval``: fit a router on records, route questions, compare routers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from atlas_router.cli.common import load_records, print_json
from atlas_router.errors import AtlasError

ALIASES = {"cluster": "atlas-cluster", "cluster-paper": "atlas-cluster-paper"}


def _encoder(spec: Optional[str]):
    from atlas_router.routers.encoders import build_encoder

    return build_encoder(spec)


def fit(
    router: str = typer.Argument("cluster", help="Router to fit: cluster (atlas-cluster), knn, mlp, bert, routerdc, best-single, random."),
    records: str = typer.Option(..., "--records", help="RecordStore directory to fit on."),
    out: str = typer.Option(..., "--out", help="Router file to write."),
    k: Optional[int] = typer.Option(None, "--k", help="Clusters (cluster router; default: chosen by cross-validation) or neighbours (knn, default 10)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Utility weight of cost: U = (1-a) accuracy - a cost."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="sentence-transformers[:MODEL] | openai:MODEL@URL | hashing[:DIM]."),
    seed: int = typer.Option(0, "--seed"),
    shrinkage: Optional[float] = typer.Option(None, "--shrinkage", help="Pseudo-count m pulling thin cells towards broader stats (default: chosen by cross-validation)."),
    method: str = typer.Option("auto", "--method", help="Cluster router: auto (settings by cross-validation) or paper (K=8, plain cluster means)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML: only its pairs are routed (cluster router)."),
    new_pair: str = typer.Option("exclude", "--new-pair", help="Pool pairs without records: exclude or prior."),
    prior_accuracy: float = typer.Option(0.5, "--prior-accuracy", help="Accuracy assumed for new pairs (--new-pair prior)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Fit a router on records and save it to one file (with a manifest)."""
    from atlas_router.records.feedback import training_records
    from atlas_router.routers import make_router

    name = ALIASES.get(router, router)
    if name in ("oracle", "zero-shot", "few-shot"):
        raise AtlasError(f"'{router}' cannot be fitted to a file; use atlas eval to compare it")
    params: dict = {"alpha": alpha, "seed": seed}
    if name in ("atlas-cluster", "atlas-cluster-paper"):
        params.update(k=k, shrinkage=shrinkage, new_pair=new_pair, prior_accuracy=prior_accuracy)
        if name == "atlas-cluster":
            params["method"] = method
        if pool:
            from atlas_router.config import load_pool_config

            params["pool"] = load_pool_config(pool)
    elif name == "knn" and k is not None:
        params["k"] = k
    r = make_router(name, **params)
    df, notes = training_records(load_records(records, "--records"))  # gateway feedback scores its answers
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if df.empty:
        raise AtlasError(f"{records}: no records left to fit on (see the notes above)")
    r.fit(df, _encoder(encoder) if r.uses_encoder else None)
    from atlas_router.routers.persist import save_router

    path = save_router(r, out)
    manifest = r.manifest()
    if as_json:
        print_json({"file": str(path), **manifest})
        return
    typer.echo(f"fitted {name} on {manifest['n_queries']} queries, {len(manifest['pairs'])} pairs "
               f"(data {manifest['data_hash']}, encoder {manifest['encoder']}) -> {path}")
    if name in ("atlas-cluster", "atlas-cluster-paper"):
        s = r.settings()
        typer.echo(f"  settings ({'cross-validated' if s['cv'].get('ran') else 'given'}): k={s['k']} "
                   f"shrinkage={s['shrinkage']:g} task_weight={s['task_weight']:g} ridge_weight={s['ridge_weight']:g} "
                   f"evidence={s['evidence']:g}" + ("; best single pair (no setting beat it in cross-validation)"
                                                     if s["single"] else ""))
        for c in r.cluster_summary():
            typer.echo(f"  cluster {c['cluster']}: {c['size']} queries, best {c['model']}/{c['tool']} "
                       f"(accuracy {c['accuracy']:.3f}, cost {c['cost']:.3g})")


def route(
    questions: List[str] = typer.Argument(..., help="Question(s) to route; - reads one from standard input."),
    router_file: str = typer.Option(..., "--router-file", help="Router file written by atlas fit."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Override the router's utility weight."),
    as_json: bool = typer.Option(False, "--json", help="Print decisions as JSON."),
    explain: bool = typer.Option(False, "--explain", help="Show why: cluster, distance, top pairs, fallbacks."),
) -> None:
    """Route each QUESTION to a (model, tool) pair with a fitted router."""
    from atlas_router.execution.validate import read_question, validate_question
    from atlas_router.routers import load_router

    texts = [validate_question(read_question(q)) for q in questions]
    r = load_router(router_file)
    decisions = r.route(texts, alpha=alpha)
    if as_json:
        rows = [{"question": q, **(d.to_dict() if explain else {"model": d.model, "tool": d.tool, "utility": d.utility})}
                for q, d in zip(texts, decisions)]
        print_json(rows[0] if len(rows) == 1 else rows)
        return
    for q, d in zip(texts, decisions):
        prefix = f"{q[:60]!r}: " if len(texts) > 1 else ""
        typer.echo(f"{prefix}{d.model} {d.tool}")
        if explain:
            e = d.explanation
            bits = [f"{k}={e[k]}" for k in ("cluster", "distance", "ood", "stats", "alpha") if k in e]
            typer.echo("  " + " ".join(bits))
            if e.get("benchmark"):
                typer.echo("  benchmark: " + ", ".join(f"{b} {p:.2f}" for b, p in e["benchmark"].items()))
            if e.get("fallback"):
                typer.echo(f"  fallback: {e['fallback']}")
            for t in e.get("top", []):
                n = f" n={t['n']}" if "n" in t else ""
                typer.echo(f"  {t['model']}/{t['tool']}: accuracy {t['accuracy']:.3f} cost {t['cost']:.3g}{n} "
                           f"utility {t['utility']:.4f}")


def evaluate(
    train: str = typer.Option(..., "--train", help="RecordStore directory to fit the routers on."),
    test: Optional[str] = typer.Option(None, "--test", help="RecordStore directory to evaluate on (default: split --train)."),
    routers: Optional[str] = typer.Option(None, "--routers", help="Comma list of routers (default: all)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Utility weight of cost used for the tables."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on standard output (the tables go "
                                 "to standard error)."),
    json_out: Optional[str] = typer.Option(None, "--json-out", help="Write the results as JSON to this file "
                                           "(- for standard output, as --json)."),
    report: Optional[str] = typer.Option(None, "--report", help="Write report.md and report.html into this directory."),
    ood: Optional[str] = typer.Option(None, "--ood", help="Fit only on these benchmarks (comma list); test on all."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML whose live model runs the zero-/few-shot routers."),
    llm: Optional[str] = typer.Option(None, "--llm", help="Pool model for the LLM routers (default: the first)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder spec shared by the embedding routers."),
    k: Optional[int] = typer.Option(None, "--k", help="Clusters of atlas-cluster (default: chosen by cross-validation)."),
    seed: int = typer.Option(0, "--seed"),
    test_size: float = typer.Option(0.3, "--test-size", help="Held-out fraction of queries when --test is not given."),
    policy: Optional[str] = typer.Option(None, "--policy", help="RL policy directory (atlas train-rl) for the rl and hybrid routers."),
) -> None:
    """Fit every router on --train, replay them on --test, print tables and JSON (--json, --json-out FILE) / a report."""
    from atlas_router.eval.run import parse_router_list, run_evaluation
    from atlas_router.eval.split import split_records
    from atlas_router.routers.utility import check_alpha

    check_alpha(alpha)
    ood_list = [b.strip() for b in ood.split(",") if b.strip()] if ood else None
    console = Console(stderr=True)
    chat_model, pool_config, notes = _llm_router_model(pool, llm, console)
    names = parse_router_list(routers, with_llm=chat_model is not None)
    train_df = load_records(train, "--train")
    if test:
        test_df = load_records(test, "--test")
    else:
        train_df, test_df = split_records(train_df, test_size=test_size, seed=seed)
    ev = run_evaluation(train_df, test_df, names, alpha=alpha, encoder=_encoder(encoder) if encoder else None,
                        seed=seed, k=k, ood=ood_list, chat_model=chat_model, pool_config=pool_config,
                        router_params={"rl": {"policy": policy}, "hybrid": {"policy": policy, "k": k}},
                        progress=lambda m: console.print(f"[dim]{m}[/]"))
    ev.notes = notes + ev.notes
    to_stdout = as_json or json_out == "-"
    _print_tables(ev, Console(stderr=True) if to_stdout else Console())
    if to_stdout:
        print_json(ev.to_json())
    if json_out and json_out != "-":
        Path(json_out).expanduser().parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).expanduser().write_text(json.dumps(ev.to_json(), indent=2), encoding="utf-8")
    if report:
        from atlas_router.eval.report import write_report
        from atlas_router.eval.run import cluster_points

        md, page = write_report(ev.to_json(), report, cluster_points=cluster_points(ev))
        console.print(f"report: {md} and {page}")


def _llm_router_model(pool: Optional[str], llm: Optional[str], console: Console):
    """The pool model that runs the LLM routers, when a pool is given and the model answers."""
    if not pool:
        return None, None, []
    from atlas_router.cli.common import load_pool, run_async

    the_pool = load_pool(pool)
    name = llm or the_pool.config.models[0].name
    model = the_pool.model(name)
    async def ping_and_close() -> str:
        try:
            return await model.ping()
        finally:  # connections belong to this event loop, which ends here
            await model.aclose()

    try:
        run_async(ping_and_close())
    except Exception as err:  # an unreachable model skips the LLM routers, it does not stop the evaluation
        return None, None, [f"zero-shot/few-shot skipped: pool model '{name}' did not answer ({err})"]
    console.print(f"[dim]LLM routers use pool model {name}[/]")
    return model, the_pool.config, []


def _print_tables(ev, console: Console) -> None:
    overall = Table(title=f"all benchmarks ({ev.n_test_queries} test queries, alpha={ev.alpha:g})")
    for col in ("router", "accuracy", "cost / query", "calls / query", "missing"):
        overall.add_column(col, justify="left" if col == "router" else "right")
    for name, r in ev.results.items():
        o = r.overall
        overall.add_row(name, f"{o.accuracy:.4f}", f"{o.cost:.3g}", f"{o.calls:.2f}", str(o.missing))
    console.print(overall)
    benches = sorted({b for r in ev.results.values() for b in r.per_benchmark})
    for b in benches:
        t = Table(title=b)
        for col in ("router", "accuracy", "cost / query", "calls / query"):
            t.add_column(col, justify="left" if col == "router" else "right")
        for name, r in ev.results.items():
            o = r.per_benchmark.get(b)
            if o is not None:
                t.add_row(name, f"{o.accuracy:.4f}", f"{o.cost:.3g}", f"{o.calls:.2f}")
        console.print(t)
    points = ev.operating_points()
    if points:
        bs, oracle = ev.references["best_single"], ev.references["oracle"]
        t = Table(title=f"cost-aware frontier (a swept; best single {bs['pair']}: accuracy {bs['accuracy']:.4f}, "
                        f"cost {bs['cost']:.3g}; oracle {oracle['accuracy']:.4f})")
        for col in ("router", "cheapest point >= best single", "alpha", "cost share of best single",
                    "best accuracy", "gap to oracle closed"):
            t.add_column(col, justify="left" if col == "router" else "right")
        for name, p in points.items():
            c = p["cheapest_at_best_single_accuracy"]
            share, gap = p["cost_share"], p["gap_closed"]
            t.add_row(name, f"{c['accuracy']:.4f} at {c['cost']:.3g}" if c else "never reached",
                      f"{c['alpha']:g}" if c else "-", f"{share:.1%}" if share is not None else "-",
                      f"{p['best_accuracy']:.4f}", f"{gap:.1%}" if gap is not None else "-")
        console.print(t)
    for note in ev.notes + [f"{n}: {x}" for n, r in ev.results.items() for x in r.notes]:
        console.print(f"note: {note}")


def register(app: typer.Typer) -> None:
    app.command("fit")(fit)
    app.command("route")(route)
    app.command("eval")(evaluate)
