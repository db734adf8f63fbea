"""atlas-router: send each query to the best (model, tool) pair, and learn multi-step routing policies."""

__version__ = "0.1.0"
