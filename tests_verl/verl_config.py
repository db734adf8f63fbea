"""veRL 0.9's own trainer configuration, composed by hydra the way ``verl.trainer.main_ppo`` composes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import verl
from hydra import compose, initialize_config_dir

VERL_CONFIG_DIR = Path(verl.__file__).resolve().parent / "trainer" / "config"


def composed(overrides: list[str]) -> Any:
    """``ppo_trainer.yaml`` with command-line ``key=value`` overrides applied."""
    with initialize_config_dir(config_dir=str(VERL_CONFIG_DIR), version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)
