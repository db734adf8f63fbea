"""What a benchmark is: where its examples come from, how a question is shown, and how replies are graded."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas_router.data.graders import get_grader

# Example attribute -> source field name, or several candidates (the first present wins).
# A dotted name reaches into nested mappings ("reward_model.ground_truth").
FieldSpec = str | tuple[str, ...]


@dataclass
class Example:
    """One benchmark item. ``reference`` is a string, a list of accepted answers, or a mapping (code tests)."""

    id: str
    question: str
    reference: Any = ""
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HubSource:
    """Where users download the benchmark: a Hugging Face dataset id, config and default split."""

    path: str
    split: str
    config: str | None = None
    note: str = ""  # e.g. "gated: accept the terms on the hub first"


@dataclass(frozen=True)
class Benchmark:
    """A registered benchmark. ``finish`` post-processes a mapped example (build choices, tests, ...)."""

    name: str
    domain: str
    grader: str
    fields: Mapping[str, FieldSpec]
    prompt: Callable[[Example], str]
    hub: HubSource | None = None
    finish: Callable[[Example, Mapping[str, Any]], Example] | None = None
    grader_options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    aliases: tuple[str, ...] = ()
    default_path: str | None = None  # a bundled copy read when no path is given (the demo suite)
    # source rows -> rows, given the data file's directory (None for the hub): one image row with several
    # questions becomes several rows (TallyQA), image columns become checked references (image benchmarks)
    expand_rows: Callable[[Iterable[Mapping[str, Any]], Path | None], Iterable[Mapping[str, Any]]] | None = None

    def format_prompt(self, example: Example) -> str:
        """The user message a model sees for this example."""
        return self.prompt(example)

    def grade(self, prediction_text: str, example: Example) -> float:
        """Score of a model's full reply on ``example``, in [0, 1], by this benchmark's grader."""
        score = get_grader(self.grader).score(prediction_text or "", example, **dict(self.grader_options))
        return min(1.0, max(0.0, float(score)))

    def extract_answer(self, prediction_text: str, example: Example) -> str:
        """The short final answer of a reply, as this benchmark's grader reads it (the records' ``answer``)."""
        return get_grader(self.grader).extract(prediction_text or "", example)
