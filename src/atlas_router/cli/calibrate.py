"""``atlas calibrate``: the alpha that meets a cost ceiling or an accuracy floor, checked on held-out queries."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from atlas_router.cli.common import load_records, print_json
from atlas_router.errors import AtlasError


def calibrate(
    records: Path = typer.Option(..., "--records", help="Records directory (from 'atlas import' or 'atlas collect')."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Target: mean cost per query at most C."),
    min_quality: Optional[float] = typer.Option(None, "--min-quality", help="Target: accuracy at least P, at the least cost."),
    test_size: float = typer.Option(0.3, "--test-size", help="Share of queries held out for the test split."),
    calib_size: float = typer.Option(0.3, "--calib-size", help="Share of the train queries used to calibrate."),
    seed: int = typer.Option(0, "--seed", help="Seed of the splits, k-means and the bootstrap."),
    k: Optional[int] = typer.Option(None, "--k", min=1, help="Number of clusters (default: chosen by cross-validation)."),
    encoder: Optional[str] = typer.Option(None, "--encoder", help="Encoder spec (default: sentence-transformers)."),
    save_router: Optional[Path] = typer.Option(None, "--save-router", help="Save the calibrated router (alpha set)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON on standard output (the summary "
                                 "goes to standard error)."),
    json_out: Optional[str] = typer.Option(None, "--json-out", help="Write the full report here (and a manifest "
                                           "beside it); - for standard output, as --json."),
) -> None:
    """Fit on train, pick alpha on a calibration split for the target, report cost and gain on the test split."""
    from atlas_router.eval.calibrate import Target, calibrate_prepared, prepare, summary_lines
    from atlas_router.eval.manifest import run_manifest, write_output

    target = Target(max_cost=max_cost, min_quality=min_quality)
    frame = load_records(records)
    prep = prepare(frame, test_size=test_size, calib_size=calib_size, seed=seed, encoder=encoder, k=k)
    result = calibrate_prepared(prep, target)
    to_stdout = as_json or json_out == "-"
    for line in summary_lines(result.report):
        typer.echo(line, err=to_stdout)
    if save_router is not None:
        from atlas_router.routers.persist import save_router as write_router

        typer.echo(f"router: {write_router(result.router, save_router)}", err=to_stdout)
    if to_stdout:
        print_json(result.report)
    if json_out is not None and json_out != "-":
        manifest = run_manifest(
            "calibrate", data=result.data, records_path=records, encoders={"encoder": prep.encoder},
            routers={"atlas-cluster": result.router},
            seeds={"split": seed, "calibration_split": seed + 1, "kmeans": seed, "bootstrap": seed},
            settings={**prep.settings, "target": result.report["target"]},
        )
        out, man = write_output(json_out, result.report, manifest)
        typer.echo(f"report: {out} (manifest: {man})", err=to_stdout)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)
