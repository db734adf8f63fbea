"""The Python examples of docs/api.md run as written, in order, in one fresh interpreter (as a reader
would paste them); a failing block is named in the failure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__main__"}
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"docs/api.md block {i + 1}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"BLOCK {i + 1} FAILED", flush=True)
        sys.exit(1)
    print(f"BLOCK {i + 1} OK", flush=True)
"""


def blocks() -> list[str]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def test_every_task_has_an_example():
    text = DOC.read_text(encoding="utf-8")
    headings = [h.lower() for h in re.findall(r"^## (.+)$", text, re.M)]
    for task in ("fit", "route", "answer", "save", "load"):
        assert any(h.startswith(task) or f" {task}" in h for h in headings), task
    code = "\n".join(blocks())
    for call in ("api.fit(", "api.route(", "api.answer(", "api.save(", "api.load("):
        assert call in code, call


def test_docs_examples_run(tmp_path):
    found = blocks()
    assert len(found) >= 5
    (tmp_path / "blocks.json").write_text(json.dumps(found), encoding="utf-8")
    (tmp_path / "runner.py").write_text(RUNNER, encoding="utf-8")
    done = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("BLOCK")] == [
        f"BLOCK {i + 1} OK" for i in range(len(found))]
