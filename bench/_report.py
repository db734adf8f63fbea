"""Verdict lines shared by the bench scripts: each figure with its floor, in one format ``run_all`` reads.

A line ``CHECK OK|FAIL name: value (floor)`` per binding figure; a script exits 1 when one failed.
"""

from __future__ import annotations

import sys

_failed: list[str] = []


def check(name: str, value: float, floor: float, *, unit: str = "x", higher_is_better: bool = True) -> bool:
    """Print one verdict; ``floor`` is the bound the figure must meet (>= floor, or <= it when lower wins)."""
    ok = value >= floor if higher_is_better else value <= floor
    op = ">=" if higher_is_better else "<="
    print(f"CHECK {'OK  ' if ok else 'FAIL'} {name}: {value:.3g}{unit} (floor {op} {floor:g}{unit})", flush=True)
    if not ok:
        _failed.append(name)
    return ok


def check_true(name: str, ok: bool, detail: str) -> bool:
    print(f"CHECK {'OK  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        _failed.append(name)
    return ok


def finish() -> None:
    """Exit 1 when any check failed (so ``run_all`` and CI see it)."""
    sys.exit(1 if _failed else 0)
