"""The PPO trainer: one step's bookkeeping, and a run killed mid-way that resumes from its checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from atlas_router.rl.config import parse_train_config
from atlas_router.rl.setup import build_parts
from atlas_router.rl.trainer import PPOTrainer
from support.rl import single_thread

TINY = {
    "policy": {"kind": "tiny", "tiny": {"hidden": 32, "intermediate": 64, "heads": 2}},
    "data": {"suite": True, "max_train_tasks": 40, "max_eval_tasks": 8},
    "env": {"max_turn_tokens": 32, "max_response_tokens": 128},
    "ppo": {"steps": 8, "batch_size": 4, "mini_batch_size": 2, "micro_batch_size": 2, "actor_lr": 1e-3,
            "critic_lr": 1e-3},
    "warm_start": {"steps": 3, "batch_size": 4},
    "output": {"checkpoint_every": 1},
    "threads": 1,
}

EXPECTED_METRICS = {"reward", "reward_fmt", "reward_out", "reward_sel", "format_valid", "accuracy", "kl",
                    "entropy", "value_loss", "policy_loss", "routes_per_query", "cost_per_query", "tokens_per_s",
                    "time_s", "clipfrac"}


async def test_one_step_updates_the_actor_and_critic_but_never_the_reference(tmp_path):
    cfg = parse_train_config({**TINY, "output": {"dir": str(tmp_path / "run"), "checkpoint_every": 1}})
    with single_thread():
        parts = build_parts(cfg)
        trainer = PPOTrainer(cfg, parts)
        await trainer.prepare()
        actor0 = {k: v.clone() for k, v in trainer.actor.state_dict().items()}
        ref0 = {k: v.clone() for k, v in trainer.ref.state_dict().items()}
        critic0 = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
        row = await trainer.train_step()
    assert EXPECTED_METRICS <= set(row) and row["step"] == 1
    assert all(isinstance(row[k], float) for k in EXPECTED_METRICS - {"tokens_per_s"})
    assert -1.15 - 1e-9 <= row["reward"] <= 1.0 and 0.0 <= row["format_valid"] <= 1.0
    assert any(not torch.equal(v, trainer.actor.state_dict()[k]) for k, v in actor0.items())
    assert any(not torch.equal(v, trainer.critic.state_dict()[k]) for k, v in critic0.items())
    assert all(torch.equal(v, trainer.ref.state_dict()[k]) for k, v in ref0.items())
    assert row["kl"] == pytest.approx(0.0, abs=1e-5)  # the first rollout comes from the reference itself


async def test_a_grouped_step_rolls_each_question_out_group_size_times_and_leaves_the_critic_alone(tmp_path, monkeypatch):
    import atlas_router.rl.trainer as trainer_mod

    ppo = {**TINY["ppo"], "batch_size": 6, "group_size": 3, "advantage": "grpo"}
    cfg = parse_train_config({**TINY, "ppo": ppo, "output": {"dir": str(tmp_path / "run")}})
    seen: list[str] = []
    real_rollout = trainer_mod.rollout

    async def spy(model, tokenizer, env, tasks, *args, **kwargs):
        seen.extend(t.question for t in tasks)
        return await real_rollout(model, tokenizer, env, tasks, *args, **kwargs)

    real_score = trainer_mod.score_episode
    episodes = iter(range(1000))

    def uneven(*args, **kwargs):  # an untrained policy scores alike everywhere: spread the scores by episode
        terms = real_score(*args, **kwargs)
        return dataclasses.replace(terms, total=terms.total + 0.1 * (next(episodes) % 3))

    monkeypatch.setattr(trainer_mod, "rollout", spy)
    monkeypatch.setattr(trainer_mod, "score_episode", uneven)
    with single_thread():
        parts = build_parts(cfg)
        trainer = PPOTrainer(cfg, parts)
        await trainer.prepare()
        actor0 = {k: v.clone() for k, v in trainer.actor.state_dict().items()}
        critic0 = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
        row = await trainer.train_step()
    assert len(seen) == 6 and seen[0] == seen[1] == seen[2] and seen[3] == seen[4] == seen[5] and seen[0] != seen[3]
    assert row["value_loss"] is None  # the group is the baseline: no critic is trained
    assert all(torch.equal(v, trainer.critic.state_dict()[k]) for k, v in critic0.items())
    assert row["advantage_abs"] > 0.5  # scores 0, 0.1, 0.2 in each group: advantages -1, 0, +1
    assert any(not torch.equal(v, trainer.actor.state_dict()[k]) for k, v in actor0.items())


def test_group_settings_that_cannot_work_fail_in_one_line():
    from atlas_router.errors import ConfigError

    with pytest.raises(ConfigError, match="not a multiple of group_size 3"):
        parse_train_config({**TINY, "ppo": {**TINY["ppo"], "group_size": 3}})
    with pytest.raises(ConfigError, match="group_size >= 2"):
        parse_train_config({**TINY, "ppo": {**TINY["ppo"], "advantage": "grpo"}})


def _run(cfg_path: Path, run_dir: Path, report: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "atlas_router", "train-rl", "--config", str(cfg_path), "--dir", str(run_dir),
         "--json-out", str(report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    cfg_path = tmp_path / "rl.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    run_dir, report = tmp_path / "run", tmp_path / "report.json"
    first = _run(cfg_path, run_dir, report)
    marker = run_dir / "checkpoints" / "step-000002" / "state.json"
    deadline = time.time() + 600  # generous: a busy shared machine runs the warm start slowly
    while not marker.exists():
        assert first.poll() is None, first.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL and not report.exists()
    ref_stamp = (run_dir / "reference" / "atlas_policy.json").stat().st_mtime_ns

    second = _run(cfg_path, run_dir, report)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-3000:]
    assert "resumed from step-" in err
    resumed_at = int(err.split("resumed from step-")[1][:6])
    assert resumed_at >= 2
    assert "warm start" not in err.split("resumed from")[0]  # the reference was not rebuilt
    assert (run_dir / "reference" / "atlas_policy.json").stat().st_mtime_ns == ref_stamp
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == list(range(1, 9))
    assert all(EXPECTED_METRICS <= set(r) for r in rows)
    data = json.loads(report.read_text())
    assert {"reward", "reward_fmt", "reward_out", "reward_sel", "format_valid", "accuracy", "accuracy_ci95"} <= set(data["before"])
    assert data["ppo_steps"] == 8 and data["before"]["n"] == data["held_out_queries"]
    assert (run_dir / "training.png").stat().st_size > 10_000
    assert (run_dir / "policy" / "atlas_policy.json").is_file() and (run_dir / "policy" / "critic.pt").is_file()
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["step-000007", "step-000008"]


def test_shipped_config_holds_the_paper_hyperparameters_and_bad_configs_fail_in_one_line(tmp_path):
    from atlas_router.errors import ConfigError
    from atlas_router.rl.config import load_train_config

    shipped = Path(__file__).resolve().parents[1] / "src" / "atlas_router" / "resources" / "rl" / "smollm2_replay.yaml"
    cfg = load_train_config(shipped)
    p = cfg.ppo
    assert (p.steps, p.batch_size, p.actor_lr, p.critic_lr, p.clip, p.value_clip, p.kl_coef, p.kl_type,
            p.gae_gamma, p.gae_lambda) == (250, 32, 1e-6, 1e-5, 0.2, 0.5, 0.001, "k1", 1.0, 1.0)
    assert cfg.env.max_routes == 4 and cfg.env.obs_token_cap == 2048 and cfg.reward.selection_penalty == -0.15
    assert cfg.data.records == str(shipped.parent / "records")  # relative to the file
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {suite: true}\nppo: {clip: -1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'ppo.clip'"):
        load_train_config(bad)
    bad.write_text("data: {}\nppo: {steps: 1}\n")
    with pytest.raises(ConfigError, match="suite: true' or 'records: DIR'"):
        load_train_config(bad)
    proc = subprocess.run([sys.executable, "-m", "atlas_router", "train-rl", "--config", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


def test_held_out_evaluations_reach_the_plot_and_the_report_table(tmp_path):
    from atlas_router.rl.plots import plot_metrics, read_metrics
    from atlas_router.rl.report import format_table

    metrics = tmp_path / "metrics.jsonl"
    lines = [{"kind": "train", "step": s, "reward": 0.1 * s, "accuracy": 0.1 * s} for s in (1, 2, 3, 4)]
    lines += [{"kind": "eval", "step": 2, "accuracy": 0.25, "format_valid": 1.0},
              {"kind": "eval", "step": 4, "accuracy": 0.5, "format_valid": 1.0}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    png = plot_metrics(metrics, tmp_path / "training.png")
    assert png is not None and png.stat().st_size > 1000
    curve = [{"step": r["step"], "accuracy": r["accuracy"]} for r in read_metrics(metrics) if r["kind"] == "eval"]
    table = format_table({"held_out_queries": 8, "held_out_by_step": curve})
    assert "held-out accuracy during PPO (step: accuracy): 2: 0.250, 4: 0.500" in table
