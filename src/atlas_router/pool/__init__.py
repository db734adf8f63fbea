"""The pool: models (backends) and tools built from a config; every (model, tool) pair is a choice."""

from atlas_router.pool.pool import Pool

__all__ = ["Pool"]
