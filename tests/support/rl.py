"""Shared, lazily built objects for the RL tests (one SmolLM2 tokenizer per test process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def smollm2_tokenizer() -> Any:
    from atlas_router.rl.policies import smollm2_tokenizer as load

    return load()


def suite_parts() -> tuple[Any, Any, Any]:
    """(pool view, replay table, records) of the built-in suite."""
    from atlas_router.rl.protocol import PoolView
    from atlas_router.rl.replay import ReplayTable
    from atlas_router.rl.suite import suite_pool, suite_records

    records = suite_records()
    return PoolView.from_config(suite_pool()), ReplayTable(records), records


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: tiny models gain nothing from two, and lose a lot on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
