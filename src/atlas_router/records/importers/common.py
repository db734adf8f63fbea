"""What every importer returns: the records built from a public routing table and counts that match it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from atlas_router.data.benchmarks import find_benchmark
from atlas_router.errors import AtlasError
from atlas_router.records.schema import query_key
from atlas_router.records.store import RecordStore

_SPLIT_SUFFIX = re.compile(r"[-_.](train|test|val|valid|validation|dev|eval)$", re.I)
# Columns pandas writes for an index: to_csv() with its index ("Unnamed: 0"), reset_index() ("index", "level_0").
_INDEX_COLUMN = re.compile(r"^(Unnamed: \d+(_level_\d+)?|index|level_\d+)$")


class ImportFormatError(AtlasError):
    """A routing table that does not have the layout its importer reads; the message says what is missing."""


@dataclass
class ImportResult:
    """Records built from one or more source files, with the source's own counts."""

    source: str
    files: list[str]
    records: pd.DataFrame
    queries: int
    models: list[str]
    skipped_blank: int = 0
    notes: list[str] = field(default_factory=list)
    added: int | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source, "files": self.files, "queries": self.queries, "models": len(self.models),
            "records": len(self.records), "skipped_blank": self.skipped_blank,
            "benchmarks": {str(k): int(v) for k, v in self.records["benchmark"].value_counts().sort_index().items()},
        }
        if self.added is not None:
            out["added"] = self.added
        if self.notes:
            out["notes"] = self.notes
        return out

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        text = [
            f"{self.source}: {', '.join(self.files)}",
            f"  queries: {self.queries}",
            f"  models: {len(self.models)}",
            f"  records: {len(self.records)}",
            f"  skipped blank cells: {self.skipped_blank}",
        ]
        if self.added is not None:
            text.append(f"  added to the store: {self.added} (already there: {len(self.records) - self.added})")
        text += [f"  note: {n}" for n in self.notes]
        return text


def split_from_name(path: str | Path) -> tuple[str, str]:
    """(benchmark, split) from a file name: ``gsm8k-train.json`` -> ("gsm8k", "train"), ``mbpp.json`` -> ("mbpp", "")."""
    stem = Path(path).name
    for suffix in (".gz", ".json", ".jsonl", ".csv", ".pkl", ".pickle", ".parquet"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    m = _SPLIT_SUFFIX.search(stem)
    split = ""
    if m:
        split = m.group(1).lower()
        stem = stem[: m.start()]
    elif stem.lower() in {"train", "test", "val", "valid", "validation", "dev"}:
        split, stem = stem.lower(), ""
    return stem.lower(), split


# Domains of task names that public routing tables use but the registry does not hold.
OTHER_DOMAINS = {
    "mmlu": "knowledge", "trivia_qa": "qa", "commonsense_qa": "reasoning", "openbook_qa": "reasoning",
    "arc_challenge": "reasoning", "arc-challenge": "reasoning", "hellaswag": "reasoning", "winogrande": "reasoning",
    "agentverse-mgsm": "math", "mgsm": "math", "grade-school-math": "math", "agentverse-logicgrid": "logic",
    "commongen": "generation", "mt-bench": "chat", "consensus_summary": "generation",
}


def domain_of(benchmark: str) -> str:
    """The domain of a benchmark name: the registry's (names and aliases), a few known others, else ""."""
    bench = find_benchmark(benchmark) if benchmark else None
    if bench:
        return bench.domain
    name = benchmark.lower()
    if name in OTHER_DOMAINS:
        return OTHER_DOMAINS[name]
    head = re.split(r"[-_]", name, maxsplit=1)[0]  # mmlu-abstract-algebra, MATH_prealgebra
    bench = find_benchmark(head)
    return bench.domain if bench else OTHER_DOMAINS.get(head, "")


def with_query_ids(df: pd.DataFrame) -> pd.DataFrame:
    """Fill ``query_id`` from (benchmark, query), computed once per distinct pair."""
    pairs = df[["benchmark", "query"]].drop_duplicates()
    ids = {(b, q): query_key(b, q) for b, q in zip(pairs["benchmark"], pairs["query"])}
    df["query_id"] = [ids[(b, q)] for b, q in zip(df["benchmark"], df["query"])]
    return df


def check_scores(values: pd.Series, what: str) -> pd.Series:
    """Numeric scores in [0, 1]; anything else is a format error naming the column."""
    raw = values
    num = pd.to_numeric(raw.map(_bool_to_num), errors="coerce")
    bad = num.isna() & raw.notna()
    if bad.any():
        raise ImportFormatError(f"{what}: score {raw[bad].iloc[0]!r} is not a number")
    out_of_range = (num < 0) | (num > 1)
    if out_of_range.any():
        raise ImportFormatError(f"{what}: score {num[out_of_range].iloc[0]} is outside [0, 1]")
    return num.astype(float)


def score_columns(df: pd.DataFrame, candidates: list[Any]) -> tuple[list[Any], list[str]]:
    """(model score columns, notes) among ``candidates``: unnamed/index columns and columns with no numeric
    cell are left out with a note; a column with some numbers and some text stays (``check_scores`` names
    its bad cell)."""
    models, unnamed, text = [], [], []
    for col in candidates:
        name = str(col)
        if not name.strip() or _INDEX_COLUMN.match(name):
            unnamed.append(name)
        elif not _has_number(df[col]):
            text.append(name)
        else:
            models.append(col)
    notes = []
    if unnamed:
        notes.append(f"ignored unnamed column(s) {', '.join(map(repr, unnamed))} (a saved index, not a model)")
    if text:
        notes.append(f"ignored non-numeric column(s) {', '.join(map(repr, text[:8]))}"
                     f"{' ...' if len(text) > 8 else ''} (no score values, not a model)")
    return models, notes


def _has_number(values: pd.Series) -> bool:
    """Whether any non-blank cell is a score (a number or true/false); an all-blank column counts as one."""
    cells = values[~values.map(is_blank)]
    if cells.empty:
        return True
    return bool(pd.to_numeric(cells.map(_bool_to_num), errors="coerce").notna().any())


def _bool_to_num(v: Any) -> Any:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "false"):
            return 1.0 if s == "true" else 0.0
        if s == "":
            return None
    return v


def is_blank(value: Any) -> bool:
    """A cell with no value: NaN, None or an empty string."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()


def import_into(result: ImportResult, out: str | Path) -> ImportResult:
    """Append the records to the store at ``out``; ``result.added`` says how many were new."""
    result.added = RecordStore(out).append(result.records)
    return result


def read_files(source: str, paths: Sequence[str | Path], read_one: Callable[[Path], tuple], repeat_note: str
               ) -> ImportResult:
    """One ImportResult from several files of one table format: ``read_one(path)`` returns (records,
    prompts, model names, blank rows skipped, notes); counts add up and repeated keys are noted."""
    if not paths:
        raise ImportFormatError(f"give at least one {source} file")
    frames, queries, models, blank, notes = [], 0, {}, 0, []
    for p in paths:
        records, n_prompts, names, n_blank, file_notes = read_one(Path(p))
        notes += file_notes
        frames.append(records)
        queries += n_prompts
        blank += n_blank
        models.update(dict.fromkeys(names))
    records = pd.concat(frames, ignore_index=True)
    dupes = int(records.duplicated(["query_id", "model", "tool"]).sum())
    if dupes:
        notes.append(f"{repeat_note} (kept once): {dupes}")
    return ImportResult(source, [str(p) for p in paths], records, queries=queries, models=list(models),
                        skipped_blank=blank, notes=notes)
