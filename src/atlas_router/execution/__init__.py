"""Running one query on one (model, tool) pair, and many at once; the result is a PairRecord."""

from atlas_router.execution.record import PairRecord
from atlas_router.execution.runner import run_pair, run_pairs

__all__ = ["PairRecord", "run_pair", "run_pairs"]
