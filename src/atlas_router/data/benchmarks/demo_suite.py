"""The built-in suite of ``atlas demo``: six generated domains, bundled as JSONL (see ``suite_gen``).

Each domain is its own benchmark (suite-arithmetic, suite-word-problems, suite-units-dates, suite-facts,
suite-code, suite-common-sense) so that per-benchmark tables mean something and each gets the grader its
answers need. Rows carry ``template`` and ``split``: ``--split train`` / ``--split test`` pick a side
(disjoint templates). They load from the bundled files when no path is given, so
``atlas collect -b suite-facts --split test --out DIR`` works offline.
"""

from __future__ import annotations

from atlas_router.data.benchmarks.catalog import find_benchmark, load_benchmark, register
from atlas_router.data.benchmarks.base import Benchmark, Example
from atlas_router.data.benchmarks.registry import question_only
from atlas_router.data.benchmarks.suite_gen import DOMAINS, TASKS_DIR

SPLITS = ("train", "test")


def _register() -> None:
    for name, (domain, grader) in DOMAINS.items():
        if find_benchmark(name) is None:
            register(Benchmark(
                name=name, domain=domain, grader=grader,
                fields={"id": "id", "question": "question", "reference": "answer"},
                prompt=question_only,  # the question as a user asks it; the system prompt asks for the format
                grader_options={} if grader == "number" else {"metric": "contains"},
                description=f"atlas built-in suite: {domain} questions (generated; train/test by template)",
                default_path=str(TASKS_DIR / f"{name}.jsonl"),
            ))


def load_demo_suite(split: str | None = None) -> dict[str, tuple[Benchmark, list[Example]]]:
    """Every suite benchmark with its examples (one split, or both), read from the bundled files."""
    _register()
    return {name: (find_benchmark(name), load_benchmark(name, split=split)) for name in DOMAINS}


_register()
