"""The cpu-replay run at CI size end to end (real CLI): PPO must raise held-out accuracy above the grammar-only
warm start; then the trained policy answering live and in the hybrid router."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support.deterministic_upstream import create_deterministic_app
from support.rl import single_thread
from support.servers import running_server


# the module's first test includes the training run (its fixture), which on a slow 2-core machine can take
# longer than the suite's 600 s per test; the run has its own 1800 s limit
pytestmark = pytest.mark.timeout(1900)


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpu-replay-small")
    report = root / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "atlas_router", "train-rl", "--preset", "cpu-replay-small", "--dir", str(root / "run"),
         "--json-out", str(report)],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report.read_text()), root / "run", proc.stderr


def test_ppo_raises_held_out_accuracy_over_the_grammar_only_warm_start(preset_run, capsys):
    report, run_dir, stderr = preset_run
    warm, after = report["warm_start"], report["after"]
    with capsys.disabled():  # the numbers are the point of this test: always show them
        print("\n" + stderr[stderr.index("held-out queries:"):].split("report written")[0])
    # the warm start taught the grammar, not the pairs: format holds, accuracy is the random-pair level
    assert warm["format_valid"] >= 0.85
    assert warm["accuracy"] < report["best_single"]["accuracy"]
    # PPO found better pairs from the reward alone: accuracy rose beyond the warm start's 95% interval
    assert after["accuracy"] > warm["accuracy_ci95"][1], (warm, after)
    assert after["format_valid"] >= 0.85 and after["reward"] > warm["reward"]
    for name in ("warm_start", "after", "best_single", "domain_best", "random_pair", "oracle"):
        row = report[name]
        assert row["n"] == report["held_out_queries"] and 0.0 <= row["accuracy"] <= 1.0
        assert row["accuracy_ci95"][0] <= row["accuracy"] <= row["accuracy_ci95"][1]
    assert report["domain_best"]["accuracy"] >= report["best_single"]["accuracy"] >= report["random_pair"]["accuracy"]
    assert (run_dir / "policy" / "atlas_policy.json").is_file() and (run_dir / "training.png").is_file()


def _live_pool(tmp_path: Path, url: str) -> Path:
    """The suite's pool, its two models served by a real loopback OpenAI-compatible server."""
    from atlas_router.rl.suite import SUITE_POOL_PATH

    data = yaml.safe_load(SUITE_POOL_PATH.read_text())
    for m in data["models"]:
        m.update(endpoint=f"{url}/v1", model_id="good", max_retries=0)
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_ask_routes_live_with_the_trained_policy(preset_run, tmp_path):
    _, run_dir, _ = preset_run
    with running_server(create_deterministic_app(0.0)) as url:
        proc = subprocess.run(
            [sys.executable, "-m", "atlas_router", "ask", "--policy", str(run_dir / "policy"),
             "--pool", str(_live_pool(tmp_path, url)), "What is 17 * 23?"],
            capture_output=True, text=True, timeout=300,
        )
    out = proc.stdout
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert out.startswith("<think>") and "<search>" in out and "\nanswer: " in out
    assert "route 1: " in out and "(live, cost " in out
    assert ("answer: (none)" in out) == (proc.returncode == 1)


def test_hybrid_rule_sends_familiar_queries_to_clusters_and_the_rest_to_the_policy():
    """The rule the gateway's atlas-hybrid answers by (its answers on both paths: tests/test_serve_policy.py)."""
    from atlas_router.rl.hybrid import choose_path
    from atlas_router.rl.suite import suite_records
    from atlas_router.routers.cluster import ClusterRouter
    from atlas_router.routers.encoders import build_encoder

    records = suite_records()
    train = records[records["split"] == "train"]
    router = ClusterRouter(k=4, alpha=0.5, seed=0).fit(train, build_encoder("hashing:256", cache=False))
    familiar = records[records["split"] == "test"]["query"].iloc[0]
    near, far = router.route([familiar, "Quelle est la couleur du ciel au crépuscule en hiver ?"])
    assert near.explanation["ood"] is False and far.explanation["ood"] is True
    near_path, far_path = choose_path(near, 5), choose_path(far, 5)
    assert near_path.path == "cluster" and "in distribution" in near_path.reason and near_path.support >= 5
    assert far_path.path == "rl" and "out of distribution" in far_path.reason
    thin = choose_path(near, 10**6)
    assert thin.path == "rl" and "poorly supported" in thin.reason


def test_atlas_eval_puts_rl_and_hybrid_beside_the_cluster_router_under_the_ood_protocol(preset_run, tmp_path):
    """`atlas eval --routers atlas-cluster,rl,hybrid --policy DIR --ood B1,B2` prints one table with all three."""
    from atlas_router.records.schema import query_key
    from atlas_router.records.store import RecordStore
    from atlas_router.rl.suite import suite_records

    _, run_dir, _ = preset_run
    df = suite_records()
    df["benchmark"] = "rl-" + df["domain"].astype(str)  # one benchmark per family, so --ood can leave some out
    df["query_id"] = [query_key(b, q) for b, q in zip(df["benchmark"], df["query"])]
    test_ids = df[df["split"] == "test"].groupby("benchmark")["query_id"].unique().map(lambda ids: list(ids[:8]))
    keep = {q for ids in test_ids for q in ids}
    RecordStore(tmp_path / "train").append(df[df["split"] == "train"])
    RecordStore(tmp_path / "test").append(df[df["query_id"].isin(keep)])
    out_json = tmp_path / "eval.json"
    proc = subprocess.run(
        [sys.executable, "-m", "atlas_router", "eval", "--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"),
         "--routers", "atlas-cluster,rl,hybrid", "--policy", str(run_dir / "policy"), "--ood", "rl-arithmetic,rl-letters",
         "--encoder", "hashing:256", "--k", "4", "--json-out", str(out_json)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout
    assert all(f"│ {name} " in table for name in ("atlas-cluster", "rl", "hybrid"))
    data = json.loads(out_json.read_text())
    assert data["protocol"]["ood"] == ["rl-arithmetic", "rl-letters"] and data["test"]["queries"] == 32
    pool_pairs = {m if t == "none" else f"{m}+{t}"
                  for m in ("small-lm", "large-lm") for t in ("none", "calculator", "web-search", "python-code")}
    for name in ("rl", "hybrid"):
        r = data["routers"][name]
        assert r["n"] == 32 and 0.0 <= r["accuracy"] <= 1.0 and sum(r["choices"].values()) == 32
        assert set(r["choices"]) <= pool_pairs, r["choices"]


async def test_pool_extension_check_lists_the_new_model_and_counts_its_routes(preset_run):
    """A model added after training reaches the unchanged policy's prompt; the check counts its routes."""
    from atlas_router.rl.extension import NEW_MODEL, extended_records, extension_check
    from atlas_router.rl.replay import ReplayTable
    from atlas_router.rl.suite import suite_records

    _, run_dir, _ = preset_run
    table = ReplayTable(extended_records(suite_records()))
    arith = next(t for t in table.tasks(["test"]) if t.domain == "arithmetic")
    capital = next(t for t in table.tasks(["test"]) if t.domain == "capital")
    assert table.optimal_pairs(arith.question) == {(NEW_MODEL.name, "none")}  # right and the cheapest
    assert all(m != NEW_MODEL.name for m, _ in table.optimal_pairs(capital.question))
    with single_thread():
        result = await extension_check(str(run_dir / "policy"))
    assert result["queries"] == sum(result["queries_per_domain"].values()) == 192
    assert all(0 <= result["routed_to_new_model"][d] <= n for d, n in result["queries_per_domain"].items())
