"""``atlas ask``: answer one question, routed to a (model, tool) pair by the shipped router by default.

With no pair named, the router file (default: the router shipped for the embedded pool, see
``routers.embedded``) picks the pair at an operating point (default: the cheapest pair within 2 accuracy
points of the best; ``--tolerance`` or ``--alpha`` change it), and that pair answers. ``--model`` /
``--tool`` name the pair yourself; ``--policy DIR`` lets a trained multi-step policy route.
(``--router rl|file|pair``, the old mode option, still works with a notice: see ``cli.words``.)
"""

from __future__ import annotations

from typing import Any, List, Optional

import typer

from atlas_router.cli.common import load_pool, print_json, run_async
from atlas_router.errors import AtlasError
from atlas_router.core.images import load_images
from atlas_router.execution.runner import run_pair
from atlas_router.execution.validate import read_question, validate_question
from atlas_router.tools.multimodal.describe import routing_text


def _route(question: str, router_file: Optional[str], pool: Any, tolerance: Optional[float],
           alpha: Optional[float]) -> tuple[str, str, dict[str, Any]]:
    """The pair the router file chooses for ``question``, checked against the pool, and why."""
    from atlas_router.routers.persist import load_router
    from atlas_router.routers.embedded import default_router_path
    from atlas_router.routers.operating_point import DEFAULT_TOLERANCE, OperatingPoint, route_at

    if tolerance is not None and alpha is not None:
        raise AtlasError("give --tolerance or --alpha, not both")
    router = load_router(router_file or default_router_path())
    point = OperatingPoint(tolerance=None, alpha=alpha) if alpha is not None else OperatingPoint(
        tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance)
    known = set(pool.pairs())
    missing = [p for p in router.pairs_ if p not in known]
    if missing and len(missing) == len(router.pairs_):
        raise AtlasError("the router's pairs are not in this pool; pass --router-file for this pool, or --model/--tool")
    decision = route_at(router, [question], point)[0]
    if decision.pair not in known:
        raise AtlasError(f"the router chose {decision.model}@@{decision.tool}, which this pool lacks; "
                         "pass --model/--tool")
    return decision.model, decision.tool, decision.explanation


def ask(
    question: str = typer.Argument(..., help="The question, or - to read it from standard input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Pool model name (naming a pair skips routing)."),
    tool: Optional[str] = typer.Option(None, "--tool", "-t", help="Pool tool name (naming a pair skips routing)."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pool YAML (default: the embedded pool)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole record as JSON."),
    explain: bool = typer.Option(False, "--explain", help="Say which pair the router chose and why."),
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
) -> None:
    """Answer QUESTION with the pair the shipped router picks, or with the pair you name (--model/--tool)."""
    mode = _mode(router, policy, model, tool, router_file)
    question = validate_question(read_question(question))
    images = load_images(image or [])  # checked before any work: hostile or broken images fail here
    if mode == "rl":
        question = routing_text(question, images)  # the policy and its pairs see the images' descriptions

        raise typer.Exit(_ask_with_policy(pool, policy, question, as_json))
    the_pool = load_pool(pool)
    why: dict[str, Any] | None = None
    if model is None and tool is None and mode == "file":
        routed_text = routing_text(question, images) if images else question
        model_name, tool_name, why = _route(routed_text, router_file, the_pool, tolerance, alpha)
    else:
        model_name = model or the_pool.config.models[0].name
        tool_name = tool or "none"
    the_pool.model(model_name)  # unknown names and missing keys fail before any work
    the_pool.tool(tool_name)
    if explain and why is not None and not as_json:
        typer.echo(_explanation(model_name, tool_name, why), err=True)

    async def go():
        try:
            return await run_pair(the_pool, model_name, tool_name, question, images=images)
        finally:
            await the_pool.aclose()

    record = run_async(go())
    if as_json:
        payload = record.to_dict()
        if why is not None:
            payload["routing"] = why
        print_json(payload)
    else:
        typer.echo(record.answer if not record.error else f"error: {record.error}")
    if record.error:
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


def _explanation(model: str, tool: str, why: dict[str, Any]) -> str:
    lines = [f"routed to {model}@@{tool} ({why.get('operating_point', '')})"]
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
