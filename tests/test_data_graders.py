"""Graders: agreement with published correctness labels, answer extraction, and sandboxed code grading."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from atlas_router.data.benchmarks import Example, load_benchmark
from atlas_router.data.benchmarks import extract, grade
from atlas_router.data.graders import math as math_grader
from atlas_router.data.graders.choice import extract_choice, reference_letter
from atlas_router.data.graders.code import extract_code, run_tests
from atlas_router.data.graders.numeric import extract_number, grade_number, parse_number
from atlas_router.data.graders.short_answer import exact_match, normalize_answer, token_f1
from atlas_router.errors import AtlasError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_gsm8k_grader_agrees_with_routellm_labels() -> None:
    responses = pd.read_csv(DATA / "routing" / "routellm" / "gsm8k_responses.csv")
    gold = {}
    with open(DATA / "benchmarks" / "gsm8k" / "test.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            gold[row["question"]] = row["answer"]
    models = [c for c in responses.columns if c != "prompt" and not c.endswith("_response")]
    assert len(models) == 2
    agree = total = 0
    for model in models:
        for prompt, label, reply in zip(responses["prompt"], responses[model], responses[f"{model}_response"]):
            example = Example(id="", question=prompt, reference=gold[prompt])
            score = grade("gsm8k", reply if isinstance(reply, str) else "", example)
            agree += (score == 1.0) == bool(label)
            total += 1
    x = agree / total
    print(f"gsm8k grader agreement: {x:.2%} over {total} responses")
    assert total == 2 * 1319
    assert x >= 0.98


@pytest.mark.parametrize(
    ("text", "value"),
    [("#### 1,234", 1234.0), ("The answer is $18.00.", 18.0), ("\\boxed{\\frac{3}{4}}", 0.75),
     ("so 3/4 of them", 0.75), ("-7 degrees", -7.0), ("it is 1.5e3", 1500.0), ("no numbers", None)],
)
def test_numbers_are_extracted(text: str, value: float | None) -> None:
    assert extract_number(text) == value


def test_numeric_grading_rules() -> None:
    assert parse_number("$1,234.50") == 1234.5
    assert grade_number("Step 1: 5+5=10.\n#### 10", "blah #### 10") == 1.0
    assert grade_number("The answer is 10 apples", "10") == 1.0
    assert grade_number("#### 7 packs and 2 extra", "7") == 0.0  # a hedge between two numbers
    assert grade_number("#### 225 minutes or 225 min", "225") == 1.0  # the same number twice is fine
    assert grade_number("Final answer: 0.33333", "1/3") == 0.0  # 1e-6 relative tolerance by default
    assert grade_number("Final answer: 0.3333333", "1/3") == 1.0
    assert grade_number("Final answer: 0.333", "1/3", rel_tol=1e-2) == 1.0
    assert grade_number("", "5") == 0.0


def test_math_grader_cases() -> None:
    ex = Example(id="1", question="q", reference="\\frac{1}{2}")
    assert grade("math", "So the answer is $\\boxed{\\dfrac12}$.", ex) == 1.0
    assert grade("math", "Final answer: 0.5", ex) == 1.0
    assert grade("math", "Final answer: 1/3", ex) == 0.0
    sol = Example(id="2", question="q", reference="Thus $x=\\boxed{2\\sqrt{2}}$.")  # a MATH-style solution
    assert grade("math", "x = \\boxed{\\sqrt{8}}", sol) == 1.0
    assert grade("aime2024", "The answer is \\boxed{033}", Example(id="3", question="q", reference="33")) == 1.0
    assert extract("math", "so Final answer: 42", ex) == "42"


def test_math_grader_off_the_main_thread_uses_a_worker_and_bounds_time() -> None:
    results: list[float] = []

    def work() -> None:
        ex = Example(id="1", question="q", reference="\\frac{1}{2}")
        results.extend([grade("math", "\\boxed{0.5}", ex), grade("math", "\\boxed{3}", ex)])

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert results == [1.0, 0.0]
    worker = math_grader._worker._proc
    assert worker is not None and worker.pid != os.getpid() and worker.poll() is None
    # A check that overruns its wall-clock budget is a "no", and the stuck worker is killed and replaced.
    t0 = time.monotonic()
    assert math_grader._worker.ask("1", "\\boxed{1}", timeout_s=5, wall_s=0.0) is False
    assert time.monotonic() - t0 < 5 and worker.poll() is not None
    assert math_grader._worker.ask("1", "\\boxed{1}", timeout_s=5, wall_s=60) is True


def test_math_grader_leaves_the_callers_alarm_alone() -> None:
    old_handler = signal.signal(signal.SIGALRM, lambda *_: None)
    old_timer = signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        assert grade("math", "\\boxed{2}", Example(id="1", question="q", reference="2")) == 1.0
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 90  # math-verify's own alarm would have cancelled it
    finally:
        signal.setitimer(signal.ITIMER_REAL, *old_timer)
        signal.signal(signal.SIGALRM, old_handler)


def test_short_answer_normalisation_em_and_f1() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an Apple a day") == "apple day"
    refs = ["Barack Obama", "Obama"]
    assert exact_match("barack obama.", refs) == 1.0
    assert exact_match("President Obama", refs) == 0.0
    assert token_f1("President Obama", refs) == pytest.approx(2 / 3)
    assert token_f1("George Washington", refs) == 0.0
    ex = Example(id="1", question="q", reference=["Paris", "City of Paris"])
    assert grade("natural_questions", "Let me think.\nFinal answer: the city of Paris", ex) == 1.0
    assert grade("webquestions", "Final answer: London", ex) == 0.0
    assert grade("natural_questions", "Final answer: Paris", Example("2", "q", json.dumps(["paris"]))) == 1.0


@pytest.mark.parametrize(
    ("text", "letter"),
    [("(B)", "B"), ("Answer: B", "B"), ("B.", "B"), ("The answer is (C).", "C"), ("\\boxed{D}", "D"),
     ("I pick **A** here", "A"), ("Option A is wrong; the correct answer is B", "B"),
     ("The answer is B. Option A fails.", "B"), ("B) Rome", "B"), ("Rome", "C"),
     ("The answer is a mystery", ""), ("Answer: E", "")],
)
def test_choice_letters(text: str, letter: str) -> None:
    assert extract_choice(text, ["London", "Paris", "Rome", "Berlin"]) == letter


def test_choice_reference_forms_and_grade() -> None:
    opts = ["London", "Paris", "Rome", "Berlin"]
    assert reference_letter(1, opts) == "B" and reference_letter("(c)", opts) == "C"
    assert reference_letter("Berlin", opts) == "D"
    ex = Example(id="1", question="q", reference="C", choices=opts)
    assert grade("gpqa", "Reasoning...\nFinal answer: C", ex) == 1.0
    assert grade("logiqa2", "Final answer: A", ex) == 0.0


def test_grade_rejects_unknown_benchmarks() -> None:
    with pytest.raises(AtlasError, match="unknown benchmark 'nope'"):
        grade("nope", "x", Example("1", "q", "a"))


# -- code ------------------------------------------------------------------------------------------------

HUMANEVAL = {ex.id: ex for ex in load_benchmark("humaneval", limit=3)}


def test_code_grader_passes_right_code_and_fails_wrong_code() -> None:
    ex = HUMANEVAL["HumanEval/0"]
    body = ("    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
            "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n")
    assert grade("humaneval", body, ex) == 1.0  # a continuation of the prompt
    fenced = f"Here it is:\n```python\n{ex.reference['prompt']}{body}```\nDone."
    assert grade("humaneval", fenced, ex) == 1.0  # the whole function in a block
    assert grade("humaneval", "    return False\n", ex) == 0.0
    assert grade("humaneval", "", ex) == 0.0
    assert extract_code(fenced).startswith("from typing import List")


def test_code_grader_runs_model_code_outside_this_process(tmp_path: Path) -> None:
    ex = HUMANEVAL["HumanEval/0"]
    marker = tmp_path / "marker.txt"
    # Writing a file: would appear in tmp_path if the code ran here; the sandbox refuses it.
    writer = f"    open({str(marker)!r}, 'w').write('ran')\n    return True\n"
    assert grade("humaneval", writer, ex) == 0.0
    assert not marker.exists()
    # os._exit(0) would end this test process if the code ran here; an early clean exit is not a pass.
    assert grade("humaneval", "    import os\n    os._exit(0)\n", ex) == 0.0
    assert grade("humaneval", "    pass\nimport sys\nsys.exit(0)\n", ex) == 0.0
    passed, result = run_tests("    return True\nimport os\nprint('pid', os.getpid())\n", ex.reference)
    pids = [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("pid ")]
    assert not passed and pids and pids[0] != os.getpid()


def test_code_grader_bounds_runaway_code() -> None:
    ex = HUMANEVAL["HumanEval/0"]
    t0 = time.monotonic()
    passed, result = run_tests("    while True:\n        pass\n", ex.reference, timeout_s=1.5)
    assert not passed and result.error_kind == "timeout" and time.monotonic() - t0 < 10


def test_mbpp_style_reference() -> None:
    ref = {"tests": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"], "setup": ""}
    ex = Example(id="1", question="Write add(a, b).", reference=ref)
    assert grade("mbpp", "```python\ndef add(a, b):\n    return a + b\n```", ex) == 1.0
    assert grade("mbpp", "```python\ndef add(a, b):\n    return a - b\n```", ex) == 0.0
    assert grade("mbpp", "def add(a, b): return a + b", Example("2", "q", json.dumps(ref))) == 1.0
