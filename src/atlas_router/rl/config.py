"""The RL training configuration (YAML for ``atlas train-rl --config FILE``), validated with pydantic.

Defaults are the paper's hyperparameters (PPO, batch 32, actor lr 1e-6, critic lr 1e-5, clip 0.2,
value clip 0.5, k1 KL in the reward with coefficient 0.001, GAE with gamma = lambda = 1, 4 routes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atlas_router.config import validated
from atlas_router.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyPolicyConfig(_Strict):
    layers: int = Field(2, ge=1)
    hidden: int = Field(128, ge=8)
    heads: int = Field(4, ge=1)
    intermediate: int = Field(256, ge=8)
    subset_vocab: bool = True  # head over the tokens of the task data only (see policies.SubsetVocabLM)


class PolicyConfig(_Strict):
    """``tiny``: random small Llama on the SmolLM2 tokenizer; ``smollm2``: SmolLM2-135M-Instruct;
    ``path``: a saved policy directory or any Hugging Face causal LM directory."""

    kind: Literal["tiny", "smollm2", "path"] = "smollm2"
    path: str | None = None
    tiny: TinyPolicyConfig = TinyPolicyConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _path_needed(self) -> "PolicyConfig":
        if self.kind == "path" and not self.path:
            raise ValueError("policy kind 'path' needs 'path'")
        return self


class DataConfig(_Strict):
    """Where tasks and replayed routes come from: the built-in suite or a records store directory."""

    suite: bool = False
    records: str | None = None
    pool: str | None = None
    train_splits: list[str] = Field(default_factory=lambda: ["train"])
    eval_splits: list[str] = Field(default_factory=lambda: ["test"])
    replay: bool = True          # answer routes from records (False: every route runs live)
    live_fallback: bool = False  # in replay mode, run routes the records cannot answer live
    max_train_tasks: int | None = Field(None, ge=1)
    max_eval_tasks: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _source(self) -> "DataConfig":
        if not self.suite and not self.records:
            raise ValueError("set 'suite: true' or 'records: DIR' (a records store)")
        return self


class EnvConfig(_Strict):
    max_routes: int = Field(4, ge=1)
    obs_token_cap: int = Field(2048, ge=16)
    max_turn_tokens: int = Field(256, ge=8)
    max_response_tokens: int = Field(1024, ge=16)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)


class RewardSection(_Strict):
    gamma: float = 1.0
    xi: float = 1.0
    selection_penalty: float = -0.15
    selection_level: Literal["pair", "model"] = "pair"


class PPOConfig(_Strict):
    steps: int = Field(250, ge=0)
    batch_size: int = Field(32, ge=1)
    mini_batch_size: int = Field(32, ge=1)
    micro_batch_size: int = Field(8, ge=1)
    epochs: int = Field(1, ge=1)
    actor_lr: float = Field(1e-6, gt=0)
    critic_lr: float = Field(1e-5, gt=0)
    clip: float = Field(0.2, gt=0)
    clip_high: float | None = None
    dual_clip: float = Field(3.0, gt=1)
    value_clip: float = Field(0.5, gt=0)
    kl_coef: float = Field(0.001, ge=0)
    kl_type: Literal["k1", "k2", "k3", "abs"] = "k1"
    gae_gamma: float = Field(1.0, ge=0, le=1)
    gae_lambda: float = Field(1.0, ge=0, le=1)
    entropy_coef: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    critic_warmup: int = Field(0, ge=0)
    whiten_advantages: bool = True
    # episodes per sampled question (veRL's rollout.n); batch_size counts episodes and must be a multiple
    group_size: int = Field(1, ge=1)
    # "gae": critic and GAE; "grpo": each episode's score minus its question group's mean over its std
    # (veRL's adv_estimator=grpo), no critic update needed; needs group_size >= 2
    advantage: Literal["gae", "grpo"] = "gae"

    @model_validator(mode="after")
    def _groups(self) -> "PPOConfig":
        if self.batch_size % self.group_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of group_size {self.group_size}")
        if self.advantage == "grpo" and self.group_size < 2:
            raise ValueError("advantage 'grpo' compares episodes of one question: set group_size >= 2")
        return self


class WarmStartConfig(_Strict):
    """Supervised warm start on grammar-only demonstrations (random pairs, answer copied; 0 steps: none)."""

    steps: int = Field(0, ge=0)
    pairs_per_task: int = Field(1, ge=1)  # distinct random pairs demonstrated per training question
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)


class OutputConfig(_Strict):
    dir: str = "runs/rl"
    checkpoint_every: int = Field(10, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    eval_every: int = Field(0, ge=0)


class TrainConfig(_Strict):
    policy: PolicyConfig = PolicyConfig()
    data: DataConfig
    env: EnvConfig = EnvConfig()
    reward: RewardSection = RewardSection()
    ppo: PPOConfig = PPOConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    output: OutputConfig = OutputConfig()
    seed: int = 0
    threads: int | None = Field(None, ge=1)


def parse_train_config(data: Any, source: str = "<config>") -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of RL settings, got {type(data).__name__}")
    return validated(TrainConfig, data, source)


def load_train_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read an RL YAML config; relative input paths (records, pool, policy) are taken relative to the
    file, the output directory relative to the working directory."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: RL config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read RL config: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: broken YAML: {getattr(err, 'problem', None) or err}") from None
    cfg = parse_train_config(data, str(p))
    base = p.resolve().parent
    for section, key in (("data", "records"), ("data", "pool"), ("policy", "path")):
        obj = getattr(cfg, section)
        value = getattr(obj, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(obj, key, str(base / value))
    return cfg
