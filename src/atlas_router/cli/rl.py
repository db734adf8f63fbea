"""``atlas train-rl``: train a multi-step routing policy with PPO (a YAML config or a named preset)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from atlas_router.cli.common import run_async
from atlas_router.errors import AtlasError


def train_rl(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="RL training config (YAML)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A named run instead of a config: cpu-replay, cpu-replay-small."),
    as_json: bool = typer.Option(False, "--json", help="Print the before/after report as JSON on standard output "
                                 "(the default without --json-out)."),
    json_out: Optional[str] = typer.Option(None, "--json-out", help="Write the before/after report (JSON) here; "
                                           "- for standard output."),
    run_dir: Optional[Path] = typer.Option(None, "--dir", help="Run directory (checkpoints, metrics, plots, policy)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines on standard error."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of everything random in the run (policy "
                                       "initialisation, warm start, sampling) instead of the config's."),
) -> None:
    """Train a routing policy; rerunning with the same run directory resumes from its last checkpoint.

    The report measures held-out queries before training, after the warm start and after PPO (each
    reward term, format-valid rate, accuracy with a 95% interval, routes per query) beside scripted
    baselines (random pair, best single pair, per-domain best pair, oracle); the table goes to standard
    error, the JSON to --json-out FILE (or standard output: the default, or --json).
    """
    from atlas_router.rl.config import load_train_config
    from atlas_router.rl.presets import preset_config, run_with_report
    from atlas_router.rl.report import format_table

    if (config is None) == (preset is None):
        raise AtlasError("give exactly one of --config FILE or --preset NAME")
    if preset is not None:
        cfg = preset_config(preset, str(run_dir or Path("runs") / f"rl-{preset}"))
    else:
        assert config is not None
        cfg = load_train_config(config)
        if run_dir is not None:
            cfg.output.dir = str(run_dir)

    if seed is not None:
        cfg.seed = cfg.policy.seed = seed

    def log(msg: str) -> None:
        if not quiet:
            typer.echo(msg, err=True)

    report = run_async(run_with_report(cfg, log=log))
    log(format_table(report))
    text = json.dumps(report, indent=2)
    if json_out is not None and json_out != "-":
        path = Path(json_out).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
        log(f"report written to {path}")
    if as_json or json_out is None or json_out == "-":
        typer.echo(text)


def register(app: typer.Typer) -> None:
    app.command("train-rl")(train_rl)
