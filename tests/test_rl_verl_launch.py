"""The veRL launch preparation (no veRL needed) and the rule that only verl_adapter imports an engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from atlas_router.rl.verl_launch import main, prepare

RL_DIR = Path(__file__).resolve().parents[1] / "src" / "atlas_router" / "rl"
ENGINES = ("verl", "ray", "vllm", "sglang", "deepspeed", "megatron", "trl", "openrlhf")


def test_prepare_writes_data_agent_loop_and_the_paper_command(tmp_path):
    command = prepare(tmp_path / "run", suite=True, overrides={"trainer.n_gpus_per_node": 4})
    assert command[1:3] == ["-m", "verl.trainer.main_ppo"]
    args = dict(c.split("=", 1) for c in command[3:])
    paper = {
        "algorithm.adv_estimator": "gae", "algorithm.gamma": "1.0", "algorithm.lam": "1.0",
        "algorithm.use_kl_in_reward": "true", "algorithm.kl_penalty": "kl", "algorithm.kl_ctrl.kl_coef": "0.001",
        "data.train_batch_size": "32", "actor_rollout_ref.model.path": "Qwen/Qwen2.5-3B-Instruct",
        "actor_rollout_ref.actor.optim.lr": "1e-06", "actor_rollout_ref.actor.clip_ratio": "0.2",
        "critic.optim.lr": "1e-05", "critic.cliprange_value": "0.5", "trainer.total_training_steps": "250",
        "trainer.n_gpus_per_node": "4",
    }
    assert {k: args[k] for k in paper} == paper
    run = tmp_path / "run"
    assert args["actor_rollout_ref.rollout.agent.agent_loop_config_path"] == str(run / "agent_loops.yaml")
    (loop,) = yaml.safe_load((run / "agent_loops.yaml").read_text())
    assert loop["name"] == "atlas_routing" and loop["_target_"] == "atlas_router.rl.verl_adapter.AtlasRoutingAgentLoop"
    assert Path(loop["records"]).is_dir() and loop["pool"].endswith("suite_pool.yaml")
    train = pd.read_parquet(run / "train.parquet")
    row = train.iloc[0]
    assert set(train["agent_name"]) == {"atlas_routing"} and len(train) == 448
    assert row["prompt"][0]["content"] == row["extra_info"]["question"]
    assert row["extra_info"]["reference"] == row["reward_model"]["ground_truth"]
    assert len(pd.read_parquet(run / "val.parquet")) == 192
    assert (run / "launch.sh").read_text().startswith("#!/bin/sh\n")


def test_launcher_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["--records", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no queries" in capsys.readouterr().err
    assert main(["--suite", "--out", str(tmp_path / "o"), "--set", "novalue"]) == 2


def test_no_rl_module_but_the_adapter_imports_a_training_engine():
    for path in RL_DIR.glob("*.py"):
        if path.name == "verl_adapter.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ENGINES, f"{path.name} imports {name}"
    code = ("import sys, atlas_router.rl.env, atlas_router.rl.rewards, atlas_router.rl.rollout, "
            "atlas_router.rl.trainer, atlas_router.rl.presets, atlas_router.rl.hybrid, atlas_router.rl.verl_launch; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ENGINES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
