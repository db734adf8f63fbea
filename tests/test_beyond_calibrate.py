"""Calibrated alpha: picking rules by hand, the cost target held on the LLMRouter test split, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from atlas_router.errors import AtlasError
from atlas_router.eval.calibrate import Target, calibrate_prepared, pick_alpha, prepare, summary_lines
from atlas_router.eval.metrics import Point
from atlas_router.records.store import RecordStore
from atlas_router.routers.persist import load_router
from atlas_router.routers.encoders import build_encoder
from support.routing_data import llmrouter_frame, synthetic_records

CURVE = [Point(0.0, 0.70, 10.0), Point(0.1, 0.66, 6.0), Point(0.3, 0.66, 5.0), Point(0.6, 0.55, 2.0),
         Point(1.0, 0.40, 1.0)]


def test_pick_alpha_rules():
    # cost <= 6: points at cost 6 (0.66), 5 (0.66), 2, 1 -> most accurate 0.66, tie -> cheaper: alpha 0.3
    assert pick_alpha(CURVE, Target(max_cost=6.0)) == (CURVE[2], True)
    # accuracy >= 0.6: 0.70, 0.66, 0.66 qualify -> cheapest: cost 5, alpha 0.3
    assert pick_alpha(CURVE, Target(min_quality=0.6)) == (CURVE[2], True)
    # unreachable: the closest point, flagged
    assert pick_alpha(CURVE, Target(max_cost=0.5)) == (CURVE[4], False)
    assert pick_alpha(CURVE, Target(min_quality=0.9)) == (CURVE[0], False)
    with pytest.raises(AtlasError, match="exactly one"):
        Target()
    with pytest.raises(AtlasError, match="exactly one"):
        Target(max_cost=1.0, min_quality=0.5)
    with pytest.raises(AtlasError, match="min quality"):
        Target(min_quality=1.5)


def test_calibrated_alpha_meets_cost_targets_on_llmrouter_test_split():
    """MUST HOLD: the alpha chosen on the calibration split meets the cost target on the test split (10%)."""
    prep = prepare(llmrouter_frame(), encoder=build_encoder("hashing:128", cache=False), seed=0,
                   router_params={"n_init": 2})
    costs = [p.cost for p in prep.calib_points]
    lo, hi = min(costs), max(costs)
    print(f"\ncalibration curve: cost {lo:.3g} .. {hi:.3g} per query")
    # targets inside the reachable range (costs are price estimates: absolute numbers would tie the test to them)
    for target in (Target(max_cost=lo + 0.1 * (hi - lo)), Target(max_cost=lo + 0.4 * (hi - lo)),
                   Target(min_quality=0.6)):
        rep = calibrate_prepared(prep, target, n_resamples=200).report
        print("\n".join(summary_lines(rep)) + "\n")
        assert rep["met_on_calibration"]
        assert rep["within_tolerance"], rep["test"]
        if target.kind == "max_cost":
            assert rep["test"]["cost"] <= 1.10 * target.value
            assert rep["gain"]["cost_saving"] > 0.3  # far cheaper than the best single pair
        assert 0 < rep["metrics"]["aiq"] <= 1 and rep["metrics"]["arena_score"] > 0


def test_calibrate_cli(tmp_path):
    store = tmp_path / "records"
    RecordStore(store).append(synthetic_records(n_per_topic=40, seed=1))
    out, saved = tmp_path / "cal.json", tmp_path / "router.joblib"
    cmd = [sys.executable, "-m", "atlas_router", "calibrate", "--records", str(store), "--min-quality", "0.8",
           "--k", "3", "--encoder", "hashing:128", "--json-out", str(out), "--save-router", str(saved)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    print(proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0
    assert "target: accuracy >= 0.8" in proc.stdout and "test (" in proc.stdout
    report = json.loads(out.read_text())
    manifest = json.loads((tmp_path / "cal.json.manifest.json").read_text())
    assert report["target"] == {"kind": "min_quality", "value": 0.8}
    assert manifest["command"] == "calibrate" and manifest["encoders"]["encoder"]["name"] == "hashing-128"
    assert set(manifest["data"]) == {"all", "fit", "calibration", "test"}
    assert manifest["routers"]["atlas-cluster"]["centroids_hash"] and manifest["versions"]["numpy"]
    assert load_router(saved).alpha == pytest.approx(report["alpha"])
    bad = subprocess.run([sys.executable, "-m", "atlas_router", "calibrate", "--records", str(tmp_path / "none"),
                          "--max-cost", "1"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
