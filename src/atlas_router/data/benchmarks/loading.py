"""Reading benchmark rows: local files in the formats users have (JSONL, JSON, Parquet, CSV, gzip'd),
or the Hugging Face hub through ``datasets`` when it is installed (imported only then)."""

from __future__ import annotations

import gzip
import io
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from atlas_router.data.benchmarks.base import Benchmark, Example, FieldSpec
from atlas_router.errors import AtlasError

_MISSING = object()


class BenchmarkError(AtlasError):
    """A benchmark that cannot be loaded: unknown name, unreadable file, missing fields."""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller's with-block


def _plain(value: Any) -> Any:
    """Arrow/NumPy cells as plain Python (lists, str, int, float; NaN -> None)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local benchmark file, by extension: .jsonl, .json, .parquet, .csv (optionally .gz)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BenchmarkError(f"{p}: benchmark file not found")
    kind = p.suffixes[-2] if p.suffix == ".gz" and len(p.suffixes) > 1 else p.suffix
    kind = kind.lower()
    try:
        if kind == ".jsonl":
            rows = []
            with _open_text(p) as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except ValueError as err:
                            raise BenchmarkError(f"{p}: line {n} is not JSON ({err.args[0]})") from None
        elif kind == ".json":
            with _open_text(p) as fh:
                data = json.load(fh)
            rows = _json_rows(data, p)
        elif kind == ".parquet":
            import pandas as pd

            rows = [{k: _plain(v) for k, v in r.items()} for r in pd.read_parquet(p).to_dict("records")]
        elif kind == ".csv":
            import pandas as pd

            df = pd.read_csv(p, dtype=str, keep_default_na=False)
            rows = df.to_dict("records")
        else:
            raise BenchmarkError(f"{p}: unsupported file type '{kind}' (use .jsonl, .json, .parquet or .csv)")
    except (OSError, UnicodeDecodeError) as err:
        raise BenchmarkError(f"{p}: cannot read ({err})") from None
    except ValueError as err:
        raise BenchmarkError(f"{p}: not valid {kind[1:]} ({str(err).splitlines()[0]})") from None
    if not all(isinstance(r, Mapping) for r in rows):
        raise BenchmarkError(f"{p}: every row must be an object with named fields")
    return rows


def _json_rows(data: Any, p: Path) -> list[dict[str, Any]]:
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        for key in ("data", "examples", "rows", "test", "train", "validation"):
            if isinstance(data.get(key), list):
                return data[key]
    raise BenchmarkError(f"{p}: expected a JSON list of examples (or an object with a 'data' list)")


def hub_rows(bench: Benchmark, split: str | None) -> Iterator[dict[str, Any]]:
    """Rows from the Hugging Face hub via ``datasets`` (needs the package and network access)."""
    if bench.hub is None:
        raise BenchmarkError(f"benchmark '{bench.name}' has no public download; pass a local file with --path")
    try:
        import datasets  # noqa: PLC0415 - optional dependency, only for hub downloads
    except ImportError:
        raise BenchmarkError(
            f"benchmark '{bench.name}' downloads from the Hugging Face hub ({bench.hub.path}): install the "
            "'datasets' package (pip install 'atlas-router[hub]'), or pass a local file with --path"
        ) from None
    use_split = split or bench.hub.split
    try:
        if bench.hub.config:
            ds = datasets.load_dataset(bench.hub.path, bench.hub.config, split=use_split)
        else:
            ds = datasets.load_dataset(bench.hub.path, split=use_split)
    except Exception as err:  # network, auth (gated sets), unknown split: one line for the user
        note = f" ({bench.hub.note})" if bench.hub.note else ""
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BenchmarkError(f"cannot load {bench.hub.path} split '{use_split}' from the hub{note}: {first}") from None
    for row in ds:
        yield dict(row)


def get_field(row: Mapping[str, Any], spec: FieldSpec) -> Any:
    """The value of the first candidate field present in ``row`` (dotted names reach into mappings)."""
    for name in (spec,) if isinstance(spec, str) else spec:
        value: Any = row
        for part in name.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                value = _MISSING
                break
        if value is not _MISSING and value is not None:
            return value
    return _MISSING


def to_example(bench: Benchmark, row: Mapping[str, Any], index: int, fields: Mapping[str, FieldSpec]) -> Example:
    """Map one source row to an Example with the benchmark's field names, then its ``finish`` step."""
    question = get_field(row, fields.get("question", "question"))
    if question is _MISSING:
        spec = fields.get("question", "question")
        names = spec if isinstance(spec, str) else " or ".join(spec)
        raise BenchmarkError(
            f"{bench.name}: row {index} has no question field '{names}' (fields: {', '.join(map(str, row))}); "
            "map it with field_map / --field question=NAME"
        )
    ident = get_field(row, fields.get("id", ("id",)))
    reference = get_field(row, fields.get("reference", ("answer",)))
    choices = get_field(row, fields["choices"]) if "choices" in fields else _MISSING
    used = {n for spec in fields.values() for n in ((spec,) if isinstance(spec, str) else spec)}
    meta = {k: _plain(v) for k, v in row.items() if k not in used}
    example = Example(
        id=str(ident) if ident is not _MISSING else f"{bench.name}-{index}",
        question=str(question),
        reference=_plain(reference) if reference is not _MISSING else "",
        choices=[str(c) for c in _plain(choices)] if isinstance(_plain(choices), list) else None,
        meta=meta,
    )
    return bench.finish(example, row) if bench.finish else example
