"""A user's own prompts, without answers, as examples that collection can run every pair on.

Accepted files: JSONL or JSON (a list) of objects with the prompt in ``prompt``, ``question``, ``query``,
``input`` or ``text``, or an OpenAI chat request's ``messages`` (the last user message), or bare strings;
CSV with one of those columns; or a record store directory (the gateway's records: their ``query``).
Repeated prompts are run once; blank ones are skipped and counted.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atlas_router.data.benchmarks.base import Benchmark, Example
from atlas_router.errors import AtlasError

PROMPT_FIELDS = ("prompt", "question", "query", "input", "text")


@dataclass
class PromptFile:
    """The prompts of one file, in file order, and how many rows were blank or repeated."""

    name: str
    examples: list[Example]
    blank: int = 0
    repeated: int = 0


def prompt_benchmark(name: str) -> Benchmark:
    """A benchmark for unlabelled prompts: the prompt is shown as given; it has no gold grader."""
    return Benchmark(name=name, domain="", grader="", fields={}, prompt=lambda ex: ex.question,
                     description="unlabelled prompts (atlas collect --prompts)")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def prompt_of(row: Any, where: str) -> str:
    """The prompt text of one JSON row or CSV record; a row without one is a one-line error."""
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        raise AtlasError(f"{where}: expected an object or a string, got {type(row).__name__}")
    for key in PROMPT_FIELDS:
        if key in row and row[key] is not None:
            if not isinstance(row[key], str):
                raise AtlasError(f"{where}: field '{key}' must be text")
            return row[key]
    messages = row.get("messages")
    if isinstance(messages, list):
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if users:
            return _content_text(users[-1].get("content"))
    raise AtlasError(f"{where}: no prompt field (one of {', '.join(PROMPT_FIELDS)}, or chat 'messages')")


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line), f"{path}:{n}"
            except ValueError as err:
                raise AtlasError(f"{path}:{n}: not valid JSON ({err.msg})") from None


def _json_rows(path: Path) -> Iterator[tuple[Any, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise AtlasError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, list):
        raise AtlasError(f"{path}: expected a JSON list of prompts")
    for n, row in enumerate(data):
        yield row, f"{path}[{n}]"


def _csv_rows(path: Path) -> Iterator[tuple[Any, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if not any(c in columns for c in PROMPT_FIELDS):
            raise AtlasError(f"{path}: no prompt column (one of {', '.join(PROMPT_FIELDS)}); columns: "
                             f"{', '.join(columns[:8])}")
        for n, row in enumerate(reader, 2):
            yield row, f"{path}:{n}"


def _store_rows(path: Path) -> Iterator[tuple[Any, str]]:
    from atlas_router.records.store import RecordStore

    from atlas_router.records.feedback import HASH_PREFIX

    df = RecordStore(path).load(["query"])
    for n, q in enumerate(df["query"].astype(str)):  # a gateway's hashed prompt is no prompt: counted as blank
        yield ("" if q.startswith(HASH_PREFIX) else q), f"{path} record {n}"


def _rows(path: Path) -> Iterable[tuple[Any, str]]:
    if path.is_dir():
        return _store_rows(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path)
    raise AtlasError(f"{path}: unknown prompt file type '{suffix}'; use .jsonl, .json, .csv or a records directory")


def read_prompts(path: str | Path, limit: int | None = None, name: str = "prompts") -> PromptFile:
    """The distinct, non-blank prompts of a file (the first ``limit`` of them). ``name`` is the benchmark
    name their query ids derive from: keep it when more prompts of the same traffic come later."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AtlasError(f"prompt file not found: {p}")
    seen: set[str] = set()
    out = PromptFile(name=name, examples=[])
    for row, where in _rows(p):
        text = prompt_of(row, where)
        if not text.strip():
            out.blank += 1
            continue
        if text in seen:
            out.repeated += 1
            continue
        seen.add(text)
        out.examples.append(Example(id=str(len(out.examples)), question=text))
        if limit is not None and len(out.examples) >= limit:
            break
    return out
