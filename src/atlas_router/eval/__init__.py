"""Replay evaluation of routers on records: splits, metrics, alpha sweeps and reports."""

from atlas_router.eval.replay import Outcome, ReplayTable, RouterResult, evaluate_router, sweep_alpha
from atlas_router.eval.run import DEFAULT_ROUTERS, Evaluation, run_evaluation
from atlas_router.eval.split import split_records

__all__ = ["DEFAULT_ROUTERS", "Evaluation", "Outcome", "ReplayTable", "RouterResult", "evaluate_router",
           "run_evaluation", "split_records", "sweep_alpha"]
