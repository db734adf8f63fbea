"""Benchmarks: ``load_benchmark(name, ...)`` gives Examples from a local file or the public copy.

Register another benchmark with ``register(Benchmark(...))``; routers, collection and evaluation only
see names, domains, prompts and graders. The catalog (``catalog``) holds the names; importing this
package also registers the built-in suite (``demo_suite``) and the image benchmarks (``multimodal``).
"""

from __future__ import annotations

from atlas_router.data.benchmarks import demo_suite as _demo_suite  # noqa: F401  (registers the suite)
from atlas_router.data.benchmarks import multimodal as _multimodal  # noqa: F401  (registers image benchmarks)
from atlas_router.data.benchmarks.base import Benchmark, Example, FieldSpec, HubSource
from atlas_router.data.benchmarks.catalog import (
    bundled_humaneval_path, extract, find_benchmark, get_benchmark, grade, list_benchmarks, load_benchmark, register,
)
from atlas_router.data.benchmarks.loading import BenchmarkError

__all__ = [
    "Benchmark", "BenchmarkError", "Example", "FieldSpec", "HubSource", "bundled_humaneval_path", "extract",
    "find_benchmark", "get_benchmark", "grade", "list_benchmarks", "load_benchmark", "register",
]
