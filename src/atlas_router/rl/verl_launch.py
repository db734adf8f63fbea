"""Prepare a veRL run of the paper's setup: data set, agent-loop file and the ``main_ppo`` command.

This module does not import veRL (the run itself needs ``pip install 'atlas-router[verl]'`` and GPUs):

    python -m atlas_router.rl.verl_launch --records RECORDS_DIR --out runs/verl    # or --suite
    # then run the printed command: python -m verl.trainer.main_ppo key=value ...

``resources/rl/verl_paper.yaml`` maps the paper's setup onto veRL's configuration keys
(Qwen2.5-3B-Instruct actor and critic, PPO with GAE gamma = lambda = 1, k1 KL in the reward at 0.001,
clip 0.2, value clip 0.5, actor lr 1e-6, critic lr 1e-5, batch 32, 250 steps); ``--set key=value``
overrides any of them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from atlas_router.errors import AtlasError
from atlas_router.rl.replay import ReplayTable

PAPER_CONFIG = Path(__file__).resolve().parents[1] / "resources" / "rl" / "verl_paper.yaml"
AGENT_NAME = "atlas_routing"
AGENT_TARGET = "atlas_router.rl.verl_adapter.AtlasRoutingAgentLoop"


def dataset_rows(table: ReplayTable, splits: list[str]) -> list[dict[str, Any]]:
    """veRL RLHFDataset rows: the question as the prompt, everything our reward needs in ``extra_info``."""
    rows = []
    for i, t in enumerate(table.tasks(splits)):
        rows.append({
            "data_source": t.benchmark or "atlas",
            "agent_name": AGENT_NAME,
            "prompt": [{"role": "user", "content": t.question}],
            "ability": t.domain or "routing",
            "reward_model": {"style": "rule", "ground_truth": t.reference},
            "extra_info": {"index": i, "question": t.question, "benchmark": t.benchmark, "reference": t.reference,
                           "query_id": t.query_id, "domain": t.domain, "split": t.split},
        })
    return rows


def prepare(out_dir: str | Path, *, records: str | None = None, suite: bool = False, pool: str | None = None,
            train_splits: tuple[str, ...] = ("train",), eval_splits: tuple[str, ...] = ("test",),
            config: str | Path = PAPER_CONFIG, overrides: dict[str, Any] | None = None) -> list[str]:
    """Write ``train.parquet``, ``val.parquet`` and ``agent_loops.yaml``; return the launch command."""
    from atlas_router.records.store import RecordStore

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if suite:
        from atlas_router.rl.suite import SUITE_POOL_PATH, suite_records

        records_dir = out / "records"
        RecordStore(records_dir).append(suite_records())
        pool = pool or str(SUITE_POOL_PATH)
    elif records:
        records_dir = Path(records).expanduser().resolve()
    else:
        raise AtlasError("give --records DIR (a records store) or --suite")
    table = ReplayTable(RecordStore(records_dir).load())
    train, val = dataset_rows(table, list(train_splits)), dataset_rows(table, list(eval_splits))
    if not train:
        raise AtlasError(f"no queries in split(s) {', '.join(train_splits)} of {records_dir}")
    pd.DataFrame(train).to_parquet(out / "train.parquet")
    pd.DataFrame(val or train[:32]).to_parquet(out / "val.parquet")
    loop = {"name": AGENT_NAME, "_target_": AGENT_TARGET, "records": str(records_dir), "replay": True}
    if pool:
        loop["pool"] = str(Path(pool).expanduser().resolve())
    (out / "agent_loops.yaml").write_text(yaml.safe_dump([loop], sort_keys=False))
    settings = dict(yaml.safe_load(Path(config).read_text())["overrides"])
    settings.update({
        "data.train_files": str(out / "train.parquet"),
        "data.val_files": str(out / "val.parquet"),
        "actor_rollout_ref.rollout.agent.agent_loop_config_path": str(out / "agent_loops.yaml"),
        "trainer.default_local_dir": str(out / "checkpoints"),
    })
    settings.update(overrides or {})
    command = [sys.executable, "-m", "verl.trainer.main_ppo"] + [f"{k}={_hydra(v)}" for k, v in settings.items()]
    (out / "launch.sh").write_text("#!/bin/sh\n" + " \\\n  ".join(shlex.quote(c) for c in command) + "\n")
    return command


def _hydra(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_hydra(v) for v in value) + "]"
    return str(value)


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AtlasError(f"--set needs key=value, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare a veRL PPO run of the ATLAS routing policy.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--records", help="records store directory")
    src.add_argument("--suite", action="store_true", help="the built-in synthetic task suite")
    parser.add_argument("--pool", help="pool YAML (default: the embedded pool, or the suite's)")
    parser.add_argument("--out", required=True, help="directory for the data set, agent-loop file and launch.sh")
    parser.add_argument("--config", default=str(PAPER_CONFIG), help="veRL overrides (default: the paper's setup)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one veRL key")
    args = parser.parse_args(argv)
    try:
        command = prepare(args.out, records=args.records, suite=args.suite, pool=args.pool, config=args.config,
                          overrides=_parse_set(args.set))
    except AtlasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(" ".join(shlex.quote(c) for c in command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
