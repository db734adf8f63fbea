"""The tiny-replay preset end to end (real CLI), then the trained policy answering live and in the hybrid router."""

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


@pytest.fixture(scope="module")
def preset_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-replay")
    report = root / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "atlas_router", "train-rl", "--preset", "tiny-replay", "--dir", str(root / "run"),
         "--json", str(report)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report.read_text()), root / "run"


def test_tiny_replay_raises_reward_and_format_validity_on_held_out_queries(preset_run, capsys):
    report, run_dir = preset_run
    before, warm, after = report["before"], report["warm_start"], report["after"]
    with capsys.disabled():  # the numbers are the point of this test: always show them
        print(f"\ntiny-replay on {report['held_out_queries']} held-out queries "
              f"({report['ppo_steps']} PPO steps, {report['total_seconds']} s):")
        for name, row in (("before", before), ("after warm start", warm), ("after PPO", after)):
            print(f"  {name:>16}: reward {row['reward']:+.3f}  format-valid {row['format_valid']:.3f}  "
                  f"accuracy {row['accuracy']:.3f}")
    assert after["reward"] > before["reward"] and after["format_valid"] > before["format_valid"]
    assert after["reward"] > warm["reward"]  # PPO itself helps, not only the warm start
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
    _, run_dir = preset_run
    with running_server(create_deterministic_app(0.0)) as url:
        proc = subprocess.run(
            [sys.executable, "-m", "atlas_router", "ask", "--router", "rl", "--policy", str(run_dir / "policy"),
             "--pool", str(_live_pool(tmp_path, url)), "What is 17 * 23?"],
            capture_output=True, text=True, timeout=300,
        )
    out = proc.stdout
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert out.startswith("<think>") and "<search>" in out and "\nanswer: " in out
    assert "route 1: " in out and "(live, cost " in out
    assert ("answer: (none)" in out) == (proc.returncode == 1)


async def test_hybrid_router_sends_familiar_queries_to_clusters_and_the_rest_to_the_policy(preset_run, tmp_path):
    from atlas_router.pool.pool import Pool
    from atlas_router.rl.hybrid import HybridRouter
    from atlas_router.rl.suite import suite_records
    from atlas_router.routers.cluster import ClusterRouter
    from atlas_router.routers.encoders import build_encoder

    _, run_dir = preset_run
    records = suite_records()
    train = records[records["split"] == "train"]
    router = ClusterRouter(k=4, alpha=0.5, seed=0).fit(train, build_encoder("hashing:256", cache=False))
    familiar = records[records["split"] == "test"]["query"].iloc[0]
    with running_server(create_deterministic_app(0.0)) as url, single_thread():
        pool = Pool.load(_live_pool(tmp_path, url))
        hybrid = HybridRouter(router, pool, run_dir / "policy", min_support=5)
        near = await hybrid.answer(familiar)
        far = await hybrid.answer("Quelle est la couleur du ciel au crépuscule en hiver ?")
        thin = HybridRouter(router, pool, run_dir / "policy", min_support=10**6).decide(familiar)[1]
        await pool.aclose()
    assert near.path == "cluster" and "in distribution" in near.reason and near.detail["model"] in ("small-lm", "large-lm")
    assert near.decision["explanation"]["ood"] is False
    assert far.path == "rl" and "out of distribution" in far.reason and far.decision["explanation"]["ood"] is True
    assert "transcript" in far.detail and far.detail["routes"] is not None
    assert thin.path == "rl" and "poorly supported" in thin.reason
