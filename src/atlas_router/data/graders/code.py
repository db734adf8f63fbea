"""Code answers (HumanEval, MBPP): run the benchmark's unit tests on the model's code in the sandbox.

Model code never runs in this process: the program (model code + tests) goes to
``atlas_router.tools.sandbox.run_python``, a locked-down child process. A run passes only when it
exits cleanly *and* prints a per-run token written after the tests, so a program that exits early
with status 0 (``sys.exit()`` in a ``__main__`` block, ``os._exit(0)``) does not pass the tests it
skipped. The token guards against accidents, not against code that reads its own source.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

from atlas_router.tools.sandbox import SandboxLimits, SandboxResult, run_python

DEFAULT_TIMEOUT_S = 10.0
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def extract_code(text: str) -> str:
    """The program in a reply: the fenced ```python blocks (the one defining a function first), else all."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text or "")]
    if not blocks:
        return (text or "").strip("\n")
    python = [b for lang, b in blocks if lang in ("python", "py", "python3", "")] or [b for _, b in blocks]
    with_def = [b for b in python if re.search(r"^\s*def\s+\w+\s*\(", b, re.M)]
    return (with_def[-1] if with_def else python[-1]).strip("\n")


def _decode(reference: object) -> Any:
    if isinstance(reference, str):
        try:
            return json.loads(reference)
        except ValueError:
            return reference
    return reference


def build_program(completion: str, reference: object) -> str:
    """The program that passes iff the code is right: the code, then the benchmark's tests.

    HumanEval references carry ``prompt``, ``test`` and ``entry_point``: a reply that only continues the
    prompt (a body) is appended to it; one that defines the function again replaces the prompt's stub.
    MBPP references carry ``tests`` (assert lines) and an optional ``setup``; a bare list of asserts or
    a test-code string is accepted too.
    """
    ref = _decode(reference)
    code = extract_code(completion)
    if isinstance(ref, Mapping) and "entry_point" in ref:
        entry = str(ref["entry_point"])
        prompt = str(ref.get("prompt", ""))
        defines = re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M) is not None
        body = f"{prompt}\n{code}" if defines else prompt + (completion if not _FENCE.search(completion) else code)
        return f"{body}\n\n{ref.get('test', '')}\n\ncheck({entry})\n"
    if isinstance(ref, Mapping):
        tests = ref.get("tests") or ref.get("test_list") or []
        setup = str(ref.get("setup") or ref.get("test_setup_code") or "")
        tests_code = "\n".join(tests) if isinstance(tests, list) else str(tests)
        return f"{code}\n\n{setup}\n{tests_code}\n"
    if isinstance(ref, list):
        return f"{code}\n\n" + "\n".join(str(t) for t in ref) + "\n"
    return f"{code}\n\n{ref}\n"


def run_tests(completion: str, reference: object, timeout_s: float = DEFAULT_TIMEOUT_S,
              memory_mb: int = 512) -> tuple[bool, SandboxResult]:
    """Run the tests in the sandbox; (passed, the sandbox's result)."""
    token = secrets.token_hex(16)
    program = build_program(completion, reference) + f"\nprint({token!r})\n"
    result = run_python(program, SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb))
    passed = result.ok and result.exit_code == 0 and token in result.stdout
    return passed, result


def grade_code(prediction: str, reference: object, timeout_s: float = DEFAULT_TIMEOUT_S) -> float:
    """1.0 when every test passes in the sandbox, else 0.0."""
    if not (prediction or "").strip():
        return 0.0
    passed, _ = run_tests(prediction, reference, timeout_s)
    return float(passed)
