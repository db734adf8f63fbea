"""Helpers shared by CLI commands: running coroutines, printing JSON, reading the pool."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from atlas_router.pool.pool import Pool

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from a synchronous command."""
    return asyncio.run(coro)


def print_json(data: Any) -> None:
    """JSON on stdout, one document, UTF-8."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def load_pool(path: str | None) -> Pool:
    """The pool of ``--pool``, or the embedded default."""
    return Pool.load(path)
