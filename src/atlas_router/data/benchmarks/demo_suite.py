"""The built-in task suite of ``atlas demo``: forty short questions in four domains, bundled as JSONL.

Each domain is its own benchmark (demo-arithmetic, demo-facts, demo-word-problems, demo-common-sense) so
that per-benchmark tables mean something, and so each gets the grader its answers need. They load from
the bundled files when no path is given: ``atlas collect -b demo-facts --out DIR`` works offline.
"""

from __future__ import annotations

from pathlib import Path

from atlas_router.data.benchmarks import find_benchmark, load_benchmark, register
from atlas_router.data.benchmarks.base import Benchmark, Example
from atlas_router.data.benchmarks.registry import question_only, short_answer_prompt

TASKS_DIR = Path(__file__).resolve().parents[2] / "resources" / "tasks"

DOMAINS: dict[str, tuple[str, str]] = {  # benchmark -> (domain, grader)
    "demo-arithmetic": ("arithmetic", "number"),
    "demo-facts": ("facts", "short_answer"),
    "demo-word-problems": ("word-problems", "number"),
    "demo-common-sense": ("common-sense", "short_answer"),
}


def _register() -> None:
    for name, (domain, grader) in DOMAINS.items():
        if find_benchmark(name) is None:
            register(Benchmark(
                name=name, domain=domain, grader=grader,
                fields={"id": "id", "question": "question", "reference": "answer"},
                prompt=question_only if grader == "number" else short_answer_prompt,
                description=f"atlas demo suite: {domain} questions",
                default_path=str(TASKS_DIR / f"{name}.jsonl"),
            ))


def load_demo_suite() -> dict[str, tuple[Benchmark, list[Example]]]:
    """Every demo benchmark with its examples, read from the bundled files."""
    _register()
    return {name: (find_benchmark(name), load_benchmark(name)) for name in DOMAINS}


_register()
