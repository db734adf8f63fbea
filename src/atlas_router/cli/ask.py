"""``atlas ask``: answer one question, routed to a (model, tool) pair by the shipped router by default.

With no pair named, the router file (default: the router shipped for the embedded pool, see
``routers.embedded``) ranks the pairs at an operating point (default: the cheapest pair within 2 accuracy
points of the best; ``--tolerance`` or ``--alpha`` change it) and the gateway's answer path runs them
(``serve.answering``: the Controller in-process): the first-ranked pair answers, or, when it fails, the
next of the ranking (at most 3 pairs, breakers as in the gateway). ``--records DIR`` writes the answer as
the gateway's record sink does. ``--model`` / ``--tool`` name the pair yourself (exactly that pair runs);
``--policy DIR`` lets a trained multi-step policy route.
(``--router rl|file|pair``, the old mode option, still works with a notice: see ``cli.words``.)
"""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from atlas_router.cli.common import load_pool, print_json, run_async
from atlas_router.errors import AtlasError
from atlas_router.core.images import load_images
from atlas_router.execution.validate import read_question, validate_question
from atlas_router.tools.multimodal.describe import routing_text


def _router(router_file: Optional[str], pool: Any, tolerance: Optional[float], alpha: Optional[float]) -> Any:
    """The router file (default: the one shipped for the embedded pool), checked against the pool and the
    operating point asked for."""
    from atlas_router.routers.embedded import default_router_path
    from atlas_router.routers.persist import load_router

    if tolerance is not None and alpha is not None:
        raise AtlasError("give --tolerance or --alpha, not both")
    router = load_router(router_file or default_router_path())
    pairs = list(getattr(router, "pairs_", []) or [])
    known = set(pool.pairs())
    if pairs and not any(p in known for p in pairs):
        raise AtlasError("the router's pairs are not in this pool; pass --router-file for this pool, or --model/--tool")
    if tolerance is not None and not getattr(router, "estimates_accuracy", False):
        raise AtlasError(f"router '{router.name}' gives no per-pair accuracy; use a cost weight (--alpha)")
    return router


def ask(
    question: str = typer.Argument(..., help="The question, or - to read it from standard input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pool model name (naming a pair skips routing)."),
    tool: Optional[str] = typer.Option(None, "--tool", "-t", help="Pool tool name (naming a pair skips routing)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole record as JSON (with routing and attempts)."),
    explain: bool = typer.Option(False, "--explain", help="Say which pair the router chose and why, and any fallback."),
    router_file: Optional[str] = typer.Option(None, "--router-file",
                                              help="Router file (default: the one shipped for the embedded pool)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", min=0.0, max=1.0,
                                              help="Operating point: cheapest pair within this many accuracy points "
                                                   "(0.02 = 2 points) of the best. Default 0.02."),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.0, max=1.0,
                                          help="Operating point as a cost weight a in U = (1-a)·Acc - a·Cost."),
    policy: Optional[str] = typer.Option(None, "--policy", help="RL policy directory (atlas train-rl): the policy "
                                         "routes, step by step, instead of the router file."),
    router: Optional[str] = typer.Option(None, "--router", hidden=True,
                                         help="Old mode option (rl: use --policy DIR; file: the default)."),
    image: Optional[List[str]] = typer.Option(None, "--image", "-i", help="An image for the question (path or URL); repeatable."),
    records: Optional[str] = typer.Option(None, "--records", help="Record store directory: write the answer there "
                                          "as the gateway does (atlas fit --records DIR learns from it once graded)."),
    record_prompts: str = typer.Option("full", "--record-prompts", help="What --records keeps of the question: "
                                       "full (the text; needed to refit), hashed or off."),
) -> None:
    """Answer QUESTION with the pair the shipped router picks, or with the pair you name (--model/--tool).

    The gateway's answer path, in-process: route, then the router's ranking with fallback (up to 3 pairs,
    failing models' circuits skipped); --json lists every pair tried under "attempts"."""
    from atlas_router.serve import answering

    mode = _mode(router, policy, model, tool, router_file)
    question = validate_question(read_question(question))
    images = load_images(image or [])  # checked before any work: hostile or broken images fail here
    if mode == "rl":
        question = routing_text(question, images)  # the policy and its pairs see the images' descriptions

        raise typer.Exit(_ask_with_policy(pool, policy, question, as_json))
    the_pool = load_pool(pool)
    chosen_router = None
    pair = None
    if model is None and tool is None and mode == "file":
        chosen_router = _router(router_file, the_pool, tolerance, alpha)
    else:
        pair = (model or the_pool.config.models[0].name, tool or "none")
        the_pool.model(pair[0])  # unknown names and missing keys fail before any work
        the_pool.tool(pair[1])

    result = run_async(answering.ask(the_pool, question, images=images, router=chosen_router, pair=pair,
                                     alpha=alpha, tolerance=tolerance, records=records, prompts=record_prompts))
    said = _explanation(result) if explain and not as_json else ""
    if said:
        typer.echo(said, err=True)
    if as_json:
        print_json(result.to_dict())
    else:
        record = result.record
        typer.echo(record.answer if not record.error else f"error: {record.error}")
    if not result.answered:
        raise typer.Exit(1)


def _mode(router: Optional[str], policy: Optional[str], model: Optional[str], tool: Optional[str],
          router_file: Optional[str]) -> str:
    """rl (a policy routes), file (a router file routes unless a pair is named) or pair (no routing: the
    pool's first model with no tool unless named; only the old ``--router pair`` asks for it)."""
    import sys

    if router is not None:  # the old mode option, kept as it was: --policy DIR alone now selects the policy
        new = {"rl": "--policy DIR", "file": "(nothing: the default)", "pair": "--model MODEL --tool TOOL"}
        if router not in new:
            raise AtlasError(f"unknown --router '{router}'; a router file is --router-file PATH, "
                             "a policy --policy DIR")
        old = "--router rl --policy DIR" if router == "rl" else f"--router {router}"
        sys.stderr.write(f"notice: '{old}' is now '{new[router]}' (the old spelling still works, for now)\n")
        if router == "rl" and not policy:
            raise AtlasError("--router rl needs --policy DIR (a directory written by 'atlas train-rl')")
        return router
    if policy and (model or tool or router_file):
        raise AtlasError("--policy DIR routes with the policy: leave out --model, --tool and --router-file")
    return "rl" if policy else "file"


def _explanation(result: Any) -> str:
    """The router's choice and why, then each pair tried when the first did not answer."""
    why = result.routing
    lines = []
    if why is not None:
        ranking = why.get("ranking") or []
        choice = ranking[0] if ranking else f"{result.record.model}@@{result.record.tool}"
        lines.append(f"routed to {choice} ({why.get('operating_point', '')})")
        if why.get("router_error"):
            lines.append(f"  the router failed ({why['router_error']}): pairs in the pool's order")
        if "cluster" in why:
            lines.append(f"  cluster {why['cluster']}, distance {why.get('distance', 0):.3f}"
                         f"{' (out of distribution)' if why.get('ood') else ''}")
        if why.get("benchmark"):
            lines.append("  looks like: " + ", ".join(f"{k} {v:.2f}" for k, v in why["benchmark"].items()))
        for row in why.get("top", [])[:5]:
            lines.append(f"  {row['model']}@@{row['tool']}: expected accuracy {row['accuracy']:.2f}, "
                         f"cost {row['cost']:.2e}, n {row['n']}")
        if why.get("fallback"):
            lines.append(f"  note: {why['fallback']}")
    for a in result.attempts:
        if a.outcome != "ok":
            lines.append(f"  {a.model}@@{a.tool}: {a.outcome}{f' ({a.error})' if a.error else ''}; next pair")
    if len(result.attempts) > 1 and result.answered:
        lines.append(f"  fell back to {result.record.model}@@{result.record.tool}, which answered")
    if not result.answered:
        lines.append("  no pair answered")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)


def _ask_with_policy(pool_path: str | None, policy_dir: str | None, question: str, as_json: bool) -> int:
    """``atlas ask --policy DIR``: print the trajectory (or its JSON); exit status 1 without an answer."""
    import json
    import sys

    from atlas_router.rl.inference import cached_policy, answer_with_policy
    from atlas_router.rl.rollout import Trajectory

    if not policy_dir:
        raise AtlasError("routing with a policy needs --policy DIR (a directory written by 'atlas train-rl')")
    cached_policy(policy_dir)  # a bad directory fails before the pool is touched
    pool = load_pool(pool_path)

    async def go() -> Trajectory:
        try:
            return await answer_with_policy(pool, policy_dir, question)
        finally:
            await pool.aclose()

    traj = run_async(go())
    if as_json:
        sys.stdout.write(json.dumps(traj.to_dict(), ensure_ascii=False, indent=2, default=str) + "\n")
    else:
        out = sys.stdout
        out.write(traj.episode.transcript().strip() + "\n\n")
        for i, o in enumerate(traj.episode.outcomes, 1):
            where = f"{o.route.model}@@{o.route.tool}" if o.route else "invalid route"
            out.write(f"route {i}: {where} ({o.source}, cost {o.cost:.6g}){' error: ' + o.error if o.error else ''}\n")
        if traj.format_problems:
            out.write(f"format problems: {'; '.join(traj.format_problems)}\n")
        out.write(f"answer: {traj.episode.answer if traj.episode.answer is not None else '(none)'}\n")
    return 0 if traj.episode.answer else 1
