"""Single-process PPO: actor, critic with a value head, frozen reference; resumable from checkpoints.

One step: sample a batch of queries (each rolled out ``group_size`` times), roll the actor out (token
level), score every episode, compute old/reference log-probs and values, put ``-kl_coef·KL`` on every
sampled token and the episode reward on the last one, run GAE over sampled tokens only (or, with
``advantage: grpo``, compare each episode with the others of its question and leave the critic alone),
then update the critic (clipped value loss) and the actor (clipped surrogate) on mini-batches. Every
loss uses the response mask.

A run directory holds ``reference/`` (the frozen initial policy, written once), ``checkpoints/step-N``
(actor, critic, optimisers, step), ``metrics.jsonl`` (one line per step or evaluation),
``training.png`` and, at the end, ``policy/``. Killing a run and starting it again with the same
config continues from the last checkpoint: per-step seeds depend only on (seed, step), and metrics
past the checkpoint are dropped and recomputed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from atlas_router.rl.config import TrainConfig
from atlas_router.rl.warm_start import grammar_demos, warm_start
from atlas_router.rl.plots import plot_metrics
from atlas_router.rl.policies import (
    ValueModel,
    frozen_copy,
    load_policy,
    save_policy,
)
from atlas_router.rl.ppo import (
    TokenBatch,
    collate,
    gae,
    group_advantages,
    kl_penalty,
    masked_mean,
    policy_loss,
    token_logprobs,
    token_rewards,
    token_values,
    value_loss,
)
from atlas_router.rl.replay import Task
from atlas_router.rl.rewards import score_episode
from atlas_router.rl.rollout import SamplingConfig, Trajectory, rollout
from atlas_router.rl.setup import RunParts

Log = Callable[[str], None]


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def summarize(trajs: Sequence[Trajectory]) -> dict[str, float]:
    """Mean reward terms and behaviour over scored trajectories."""
    scored = [t for t in trajs if t.rewards is not None]
    if not scored:
        return {}
    mean = statistics.fmean
    return {
        "reward": mean(t.rewards.total for t in scored),
        "reward_fmt": mean(t.rewards.fmt for t in scored),
        "reward_out": mean(t.rewards.out for t in scored),
        "reward_sel": mean(t.rewards.sel for t in scored),
        "format_valid": mean(1.0 if t.rewards.format_valid else 0.0 for t in scored),
        "accuracy": mean(t.rewards.out for t in scored),
        "answer_rate": mean(1.0 if t.episode.finish == "answer" else 0.0 for t in scored),
        "routes_per_query": mean(t.num_routes for t in scored),
        "cost_per_query": mean(t.episode.cost for t in scored),
        "policy_tokens": mean(sum(t.response_mask) for t in scored),
    }


async def evaluate(parts: RunParts, model: Any, tasks: Sequence[Task], *, sampling: SamplingConfig | None = None,
                   batch_size: int = 32) -> tuple[dict[str, float], list[Trajectory]]:
    """Roll the policy out (greedy by default) on ``tasks`` and score every episode."""
    trajs: list[Trajectory] = []
    for chunk in _chunks(list(range(len(tasks))), batch_size):
        got = await rollout(model, parts.tokenizer, parts.env, [tasks[i] for i in chunk],
                            sampling or parts.eval_sampling)
        for tr in got:
            tr.rewards = score_episode(tr.episode, tr.task, parts.pool, parts.judge,
                                       parts.table.optimal_pairs(tr.task.question), parts.reward)
        trajs += got
    return summarize(trajs), trajs


class PPOTrainer:
    """Owns the models, optimisers and run directory of one training run."""

    def __init__(self, cfg: TrainConfig, parts: RunParts, log: Log | None = None) -> None:
        self.cfg = cfg
        self.parts = parts
        self.log = log or (lambda msg: None)
        self.dir = Path(cfg.output.dir).expanduser()
        self.ckpt_dir = self.dir / "checkpoints"
        self.metrics_path = self.dir / "metrics.jsonl"
        self.actor = parts.actor
        self.tokenizer = parts.tokenizer
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.step = 0
        self.critic: ValueModel | None = None
        self.ref: Any = None
        self.actor_opt: torch.optim.Optimizer | None = None
        self.critic_opt: torch.optim.Optimizer | None = None
        self.warm_start_losses: list[float] = []
        self._prepared = False

    # -- set-up and checkpoints -----------------------------------------------------------------
    async def prepare(self) -> None:
        """Warm-start and freeze the reference once; on a rerun, load it and the last checkpoint."""
        if self._prepared:
            return
        self._prepared = True
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in [*self.ckpt_dir.glob(".tmp-step-*"), *self.dir.glob(".*.tmp*")]:
            shutil.rmtree(stale, ignore_errors=True)  # half-written by a run that was killed
        ref_dir = self.dir / "reference"
        ref_meta = ref_dir / "atlas_policy.json"
        if ref_meta.is_file():
            if json.loads(ref_meta.read_text()).get("from_config"):
                self.log("reference policy: the configured initial policy")
            else:
                _, ref_actor, _ = load_policy(ref_dir)
                self.actor.load_state_dict(ref_actor.state_dict())
                self.log(f"reference policy loaded from {ref_dir}")
        else:
            ws = self.cfg.warm_start
            if ws.steps > 0:
                demos = await grammar_demos(self.tokenizer, self.parts.env, self.parts.train_tasks,
                                            pairs_per_task=ws.pairs_per_task, seed=self.cfg.seed)
                self.log(f"warm start (grammar only, random pairs): {len(demos)} demonstrations, {ws.steps} steps")
                self.warm_start_losses = warm_start(self.actor, demos, steps=ws.steps, batch_size=ws.batch_size,
                                                    lr=ws.lr, pad_id=self.pad_id, seed=self.cfg.seed, log=self.log)
                save_policy(ref_dir, self.tokenizer, self.actor, meta=self._meta())
            else:
                # Without a warm start the reference is the configured policy itself: rebuilt from the
                # config on a rerun, so no copy of the weights is written.
                ref_dir.mkdir(parents=True, exist_ok=True)
                ref_meta.write_text(json.dumps({"format": "atlas-rl-policy", "from_config": True, **self._meta()}))
        self.ref = frozen_copy(self.actor)
        self.critic = ValueModel.from_actor(self.actor)
        p = self.cfg.ppo
        self.actor_opt = torch.optim.AdamW(self.actor.parameters(), lr=p.actor_lr, weight_decay=0.01)
        self.critic_opt = torch.optim.AdamW(self.critic.parameters(), lr=p.critic_lr, weight_decay=0.01)
        latest = self.latest_checkpoint()
        if latest is not None:
            self._load_checkpoint(latest)
            self.log(f"resumed from {latest.name} (step {self.step})")
        self._trim_metrics()

    def _meta(self) -> dict[str, Any]:
        return {"policy": self.cfg.policy.kind, "max_routes": self.cfg.env.max_routes,
                "max_turn_tokens": self.cfg.env.max_turn_tokens, "max_response_tokens": self.cfg.env.max_response_tokens,
                "obs_token_cap": self.cfg.env.obs_token_cap, "pool": self.parts.pool_config.source}

    def latest_checkpoint(self) -> Path | None:
        if not self.ckpt_dir.is_dir():
            return None
        done = sorted(p for p in self.ckpt_dir.glob("step-*") if (p / "state.json").is_file())
        return done[-1] if done else None

    def save_checkpoint(self) -> Path:
        assert self.critic is not None and self.actor_opt is not None and self.critic_opt is not None
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = self.ckpt_dir / f"step-{self.step:06d}"
        tmp = self.ckpt_dir / f".tmp-step-{self.step:06d}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        torch.save(self.actor.state_dict(), tmp / "actor.pt")
        torch.save(self.critic.state_dict(), tmp / "critic.pt")
        torch.save({"actor": self.actor_opt.state_dict(), "critic": self.critic_opt.state_dict()}, tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps({"step": self.step, "seed": self.cfg.seed, "time": time.time()}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        done = sorted(p for p in self.ckpt_dir.glob("step-*") if (p / "state.json").is_file())
        for old in done[: -self.cfg.output.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _load_checkpoint(self, path: Path) -> None:
        assert self.critic is not None and self.actor_opt is not None and self.critic_opt is not None
        self.actor.load_state_dict(torch.load(path / "actor.pt", map_location="cpu", weights_only=True))
        self.critic.load_state_dict(torch.load(path / "critic.pt", map_location="cpu", weights_only=True))
        optim = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        self.actor_opt.load_state_dict(optim["actor"])
        self.critic_opt.load_state_dict(optim["critic"])
        self.step = int(json.loads((path / "state.json").read_text())["step"])

    def _trim_metrics(self) -> None:
        """Drop metric lines of steps after the checkpoint: they are about to be recomputed."""
        if not self.metrics_path.is_file():
            return
        keep = [ln for ln in self.metrics_path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= self.step]
        self.metrics_path.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")

    def _append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    # -- one PPO step ---------------------------------------------------------------------------
    def _forward_all(self, fn: Callable[[TokenBatch], torch.Tensor], batch: TokenBatch) -> torch.Tensor:
        size = self.cfg.ppo.micro_batch_size
        with torch.no_grad():
            return torch.cat([fn(batch.select(rows)) for rows in _chunks(list(range(len(batch))), size)], dim=0)

    async def train_step(self) -> dict[str, Any]:
        """Roll out, score and update once; returns the step's metrics."""
        assert self.critic is not None and self.actor_opt is not None and self.critic_opt is not None
        p = self.cfg.ppo
        step = self.step + 1
        seed = _step_seed(self.cfg.seed, step)
        rng = random.Random(seed)
        pool = self.parts.train_tasks
        n_questions = p.batch_size // p.group_size
        picked = rng.sample(pool, n_questions) if n_questions <= len(pool) else rng.choices(pool, k=n_questions)
        tasks = [t for t in picked for _ in range(p.group_size)]
        groups = [i // p.group_size for i in range(len(tasks))]
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        trajs = await rollout(self.actor, self.tokenizer, self.parts.env, tasks, self.parts.sampling, generator=gen)
        for tr in trajs:
            tr.rewards = score_episode(tr.episode, tr.task, self.parts.pool, self.parts.judge,
                                       self.parts.table.optimal_pairs(tr.task.question), self.parts.reward)
        t_rollout = time.perf_counter() - t0

        batch = collate([t.prompt_ids for t in trajs], [t.response_ids for t in trajs],
                        [t.response_mask for t in trajs], self.pad_id)
        mask = batch.mask
        old_logp = self._forward_all(lambda b: token_logprobs(self.actor, b)[0], batch)
        ref_logp = self._forward_all(lambda b: token_logprobs(self.ref, b)[0], batch)
        kl = kl_penalty(old_logp, ref_logp, p.kl_type) * mask
        scores = torch.tensor([t.rewards.total for t in trajs], dtype=torch.float32)
        rewards = token_rewards(scores, kl, mask, p.kl_coef)
        use_critic = p.advantage == "gae"
        if use_critic:
            values = self._forward_all(lambda b: token_values(self.critic, b), batch)
            adv, returns = gae(rewards, values, mask, p.gae_gamma, p.gae_lambda, whiten=p.whiten_advantages)
        else:  # the question's other episodes are the baseline: no critic pass at all
            adv, values, returns = group_advantages(rewards, mask, groups), None, None

        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "clipfrac",
                                                          "ppo_kl", "value_clipfrac", "grad_norm_actor", "grad_norm_critic")}
        update_actor = step > p.critic_warmup or not use_critic
        self.actor.train()
        self.critic.train()
        for _ in range(p.epochs):
            perm = torch.randperm(len(batch), generator=gen).tolist()
            for mini in _chunks(perm, p.mini_batch_size):
                denom = mask[mini].sum().clamp(min=1.0)
                if returns is not None and values is not None:
                    self._critic_update(batch, mini, returns, values, denom, stats)
                if not update_actor:
                    continue
                self.actor_opt.zero_grad(set_to_none=True)
                pl_sum, ent_sum, cf, pkl = 0.0, 0.0, 0.0, 0.0
                for micro in _chunks(mini, p.micro_batch_size):
                    sub = batch.select(micro)
                    logp, ent = token_logprobs(self.actor, sub, with_entropy=True)
                    assert ent is not None
                    pl = policy_loss(old_logp[micro], logp, adv[micro], sub.mask, p.clip, p.clip_high, p.dual_clip,
                                     denominator=denom)
                    ent_term = (ent * sub.mask).sum() / denom
                    (pl.loss - p.entropy_coef * ent_term).backward()
                    share = float(sub.mask.sum() / denom)
                    pl_sum += float(pl.loss.detach())
                    ent_sum += float(ent_term.detach())
                    cf += float(pl.clipfrac.detach()) * share
                    pkl += float(pl.approx_kl.detach()) * share
                stats["grad_norm_actor"].append(float(torch.nn.utils.clip_grad_norm_(self.actor.parameters(), p.grad_clip)))
                self.actor_opt.step()
                stats["policy_loss"].append(pl_sum)
                stats["entropy"].append(ent_sum)
                stats["clipfrac"].append(cf)
                stats["ppo_kl"].append(pkl)
        self.actor.eval()
        self.critic.eval()
        elapsed = time.perf_counter() - t0
        self.step = step
        tokens = int(batch.attention_mask.sum())
        row: dict[str, Any] = {"kind": "train", "step": step, **summarize(trajs)}
        row.update({k: (statistics.fmean(v) if v else None) for k, v in stats.items()})
        row.update({
            "kl": float(masked_mean(kl, mask)),
            "advantage_abs": float(masked_mean(adv.abs(), mask)),
            "return_mean": float(masked_mean(returns, mask)) if returns is not None else None,
            "time_s": elapsed, "rollout_s": t_rollout, "update_s": elapsed - t_rollout,
            "tokens": tokens, "tokens_per_s": tokens / elapsed if elapsed > 0 else None,
        })
        return row

    def _critic_update(self, batch: TokenBatch, mini: list[int], returns: torch.Tensor, values: torch.Tensor,
                       denom: torch.Tensor, stats: dict[str, list[float]]) -> None:
        """One clipped value-loss step of the critic on a mini-batch."""
        assert self.critic is not None and self.critic_opt is not None
        p = self.cfg.ppo
        self.critic_opt.zero_grad(set_to_none=True)
        vl_sum, vclip = 0.0, 0.0
        for micro in _chunks(mini, p.micro_batch_size):
            sub = batch.select(micro)
            vpred = token_values(self.critic, sub)
            vl, vcf = value_loss(vpred, returns[micro], values[micro], sub.mask, p.value_clip, denominator=denom)
            vl.backward()
            vl_sum += float(vl.detach())
            vclip += float(vcf.detach()) * float(sub.mask.sum() / denom)
        stats["grad_norm_critic"].append(float(torch.nn.utils.clip_grad_norm_(self.critic.parameters(), p.grad_clip)))
        self.critic_opt.step()
        stats["value_loss"].append(vl_sum)
        stats["value_clipfrac"].append(vclip)

    # -- the loop -------------------------------------------------------------------------------
    async def train(self, steps: int | None = None) -> dict[str, Any]:
        """Run until ``cfg.ppo.steps`` (or ``steps`` more); checkpoints, metrics and plots on the way."""
        await self.prepare()
        target = self.cfg.ppo.steps if steps is None else min(self.cfg.ppo.steps, self.step + steps)
        out = self.cfg.output
        while self.step < target:
            row = await self.train_step()
            self._append_metrics(row)
            self.log(f"step {row['step']}: reward {row['reward']:.3f} (fmt {row['reward_fmt']:.2f}, "
                     f"out {row['reward_out']:.2f}, sel {row['reward_sel']:.3f}), format-valid "
                     f"{row['format_valid']:.2f}, kl {row['kl']:.4f}, {row['time_s']:.1f}s")
            if out.eval_every and self.step % out.eval_every == 0 and self.parts.eval_tasks:
                summary, _ = await evaluate(self.parts, self.actor, self.parts.eval_tasks, batch_size=self.cfg.ppo.batch_size)
                self._append_metrics({"kind": "eval", "step": self.step, **summary})
            if self.step % out.checkpoint_every == 0 or self.step == target:
                self.save_checkpoint()
                plot_metrics(self.metrics_path, self.dir / "training.png")
        if self.step >= self.cfg.ppo.steps:
            save_policy(self.dir / "policy", self.tokenizer, self.actor, critic=self.critic, meta=self._meta())
        plot_metrics(self.metrics_path, self.dir / "training.png")
        return {"step": self.step, "dir": str(self.dir), "policy": str(self.dir / "policy")}
