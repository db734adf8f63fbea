"""Image benchmarks: ChartQA, TableVQA-Bench, Geometry3K, TallyQA and CountBench.

Each loads from its public copy on the Hugging Face hub (images decoded by ``datasets``) or from a local
file (JSONL/JSON/Parquet/CSV) with an image column: a path relative to the file's directory (or to
``ATLAS_IMAGE_ROOT``), a ``data:`` URL, an http(s) URL, or Hugging Face's ``{"bytes": ..., "path": ...}``.
An example's images are in ``example.meta["images"]`` as references ``load_image`` reads; inline image
bytes are written once to an on-disk cache (by hash) so examples stay small. Paths that leave the data
directory and ``file://`` URLs are refused when the benchmark loads.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from atlas_router.config import cache_dir, env_path
from atlas_router.data.benchmarks.catalog import find_benchmark, register
from atlas_router.data.benchmarks.base import Benchmark, Example, HubSource
from atlas_router.data.benchmarks.loading import BenchmarkError
from atlas_router.data.benchmarks.registry import choice_prompt
from atlas_router.core.images import ImageError, confine, load_image

IMAGE_FIELDS = ("images", "image", "image_path", "img", "image_file", "image_url")
_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                 "sixteen seventeen eighteen nineteen twenty").split()


def image_cache_dir() -> Path:
    """Where inline benchmark images are stored by hash (``ATLAS_IMAGE_CACHE``, else ~/.cache/atlas-router/images)."""
    return cache_dir("images")


def _cache_bytes(data: bytes) -> str:
    path = image_cache_dir() / hashlib.sha256(data).hexdigest()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def _image_ref(value: Any, base_dir: Path | None) -> str:
    """A reference ``load_image`` can read for one image cell."""
    if isinstance(value, Image.Image):
        try:
            return _cache_bytes(load_image(value).data)
        except ImageError as err:
            raise BenchmarkError(str(err)) from None
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return _cache_bytes(bytes(value["bytes"]))
        if value.get("path"):
            return _image_ref(str(value["path"]), base_dir)
        raise BenchmarkError("an image cell has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray)):
        return _cache_bytes(bytes(value))
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkError(f"an image cell must be a path, URL or image bytes, got {type(value).__name__}")
    ref = value.strip()
    if re.match(r"^(?:data|https?):", ref, re.IGNORECASE):
        return ref
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", ref):
        raise BenchmarkError(f"image reference '{ref[:60]}' has a scheme that is not accepted (use a relative "
                             "path, data: or http(s):)")
    root = env_path("ATLAS_IMAGE_ROOT") or base_dir
    if root is None:
        raise BenchmarkError(f"image path '{ref}' is relative but the rows have no data directory; set ATLAS_IMAGE_ROOT")
    try:
        return str(confine(ref, root))
    except ImageError as err:
        raise BenchmarkError(str(err)) from None


def image_refs(row: Mapping[str, Any], base_dir: Path | None) -> list[str]:
    """The image references of a row: the first non-empty image column, one or several images."""
    for name in IMAGE_FIELDS:
        value = row.get(name)
        if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        return [_image_ref(v, base_dir) for v in values]
    return []


def with_images(rows: Iterable[Mapping[str, Any]], base_dir: Path | None) -> Iterator[dict[str, Any]]:
    """Rows whose image columns are replaced by one ``images`` list of references."""
    for n, row in enumerate(rows):
        try:
            refs = image_refs(row, base_dir)
        except BenchmarkError as err:
            raise BenchmarkError(f"row {n}: {err}") from None
        if not refs:
            raise BenchmarkError(f"row {n} has no image (columns tried: {', '.join(IMAGE_FIELDS)})")
        yield {**{k: v for k, v in row.items() if k not in IMAGE_FIELDS}, "images": refs}


def tallyqa_rows(rows: Iterable[Mapping[str, Any]], base_dir: Path | None) -> Iterator[dict[str, Any]]:
    """TallyQA on the hub has one row per image with a ``qa`` list; each question becomes a row."""
    for row in with_images(rows, base_dir):
        qa = row.get("qa")
        if isinstance(qa, list):
            rest = {k: v for k, v in row.items() if k != "qa"}
            for j, item in enumerate(qa):
                if isinstance(item, Mapping):
                    yield {**rest, **item, "qa_index": j}
        else:
            yield row


def example_images(example: Example) -> list[str]:
    """The image references of an example of an image benchmark ([] for text benchmarks)."""
    images = example.meta.get("images") if isinstance(example.meta, dict) else None
    return [str(i) for i in images] if isinstance(images, list) else []


# -- prompts and finishing steps ---------------------------------------------------------------------

def short_image_prompt(ex: Example) -> str:
    return f"{ex.question}\n\nAnswer with a single number or a short phrase."


def count_prompt(ex: Example) -> str:
    return f"{ex.question}\n\nAnswer with a number."


def geometry_prompt(ex: Example) -> str:
    return choice_prompt(ex) if ex.choices else f"{ex.question}\n\nEnd with 'Final answer: <value>'."


def finish_labels(ex: Example, _row: Mapping[str, Any]) -> Example:
    """ChartQA/TableVQA gold answers as a list of accepted strings."""
    ref = ex.reference
    ex.reference = [str(r) for r in ref] if isinstance(ref, list) else [str(ref)]
    return ex


def finish_count(ex: Example, _row: Mapping[str, Any]) -> Example:
    ref = ex.reference
    if isinstance(ref, float) and ref.is_integer():
        ref = int(ref)
    ex.reference = str(ref).strip()
    return ex


def finish_countbench(ex: Example, row: Mapping[str, Any]) -> Example:
    """CountBench has captions ("three dogs on a sofa") and the number; the question hides the number."""
    ex = finish_count(ex, row)
    if row.get("question"):
        return ex
    caption = ex.question
    n = int(float(ex.reference)) if re.fullmatch(r"\d+(?:\.0)?", ex.reference) else -1
    words = [str(n)] + ([_NUMBER_WORDS[n]] if 0 <= n < len(_NUMBER_WORDS) else [])
    masked = re.sub(rf"\b(?:{'|'.join(words)})\b", "___", caption, count=1, flags=re.IGNORECASE)
    ex.question = f"The image shows: \"{masked}\". How many are there in the blank (___)? Count them in the image."
    ex.meta["caption"] = caption
    return ex


def finish_geometry(ex: Example, row: Mapping[str, Any]) -> Example:
    """Geometry3K problems carry an ``<image>`` marker; the gold is a letter (or an option's value)."""
    ex.question = ex.question.replace("<image>", "").strip()
    if ex.choices:
        gold = row.get("ground_truth") if row.get("ground_truth") not in (None, "") else ex.reference
        ex.reference = _gold_letter(gold, ex.choices)
        ex.meta["answer"] = row.get("answer")
    else:
        ex.reference = str(ex.reference)
    ex.meta.pop("ground_truth", None)
    return ex


def _gold_letter(gold: Any, choices: list[str]) -> str:
    from atlas_router.data.graders.choice import reference_letter

    return reference_letter(gold, choices)


# -- the benchmarks ----------------------------------------------------------------------------------

MULTIMODAL_BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        name="chartqa", domain="chart", grader="relaxed", prompt=short_image_prompt, finish=finish_labels,
        fields={"question": ("query", "question"), "reference": ("label", "answer", "labels"), "id": ("id", "imgname")},
        hub=HubSource("HuggingFaceM4/ChartQA", "test"), aliases=("chart_qa", "chart-qa"), expand_rows=with_images,
        description="ChartQA: questions on bar, line and pie charts; relaxed accuracy (5% numeric tolerance)",
    ),
    Benchmark(
        name="tablevqa", domain="table", grader="relaxed", prompt=short_image_prompt, finish=finish_labels,
        fields={"question": ("question",), "reference": ("gt", "answer"), "id": ("qa_id", "id")},
        hub=HubSource("terryoo/TableVQA-Bench", "vwtq", note="splits: vwtq, vwtq_syn, vtabfact, fintabnetqa"),
        aliases=("tablevqa-bench", "table_vqa"), expand_rows=with_images, grader_options={"tolerance": 0.0},
        description="TableVQA-Bench: questions on table images (VWTQ, VTabFact, FinTabNetQA); exact match",
    ),
    Benchmark(
        name="geometry3k", domain="geometry", grader="geometry", prompt=geometry_prompt, finish=finish_geometry,
        fields={"question": ("problem", "question"), "choices": ("choices", "options"),
                "reference": ("answer", "ground_truth"), "id": ("id",)},
        hub=HubSource("hiyouga/geometry3k", "test"), aliases=("geo3k", "geometry-3k"), expand_rows=with_images,
        description="Geometry3K: geometry problems with diagrams, four options",
    ),
    Benchmark(
        name="tallyqa", domain="counting", grader="count", prompt=count_prompt, finish=finish_count,
        fields={"question": ("question",), "reference": ("answer",), "id": ("question_id", "id")},
        hub=HubSource("vikhyatk/tallyqa-test", "test"), aliases=("tally_qa", "tally-qa"), expand_rows=tallyqa_rows,
        description="TallyQA: simple and complex counting questions on photos; exact count",
    ),
    Benchmark(
        name="countbench", domain="counting", grader="count", prompt=count_prompt, finish=finish_countbench,
        fields={"question": ("question", "text"), "reference": ("number", "answer"), "id": ("id",)},
        hub=HubSource("nielsr/countbench", "train", note="some rows' images are missing upstream"),
        aliases=("count_bench", "countbenchqa"), expand_rows=with_images,
        description="CountBench: images of 2-10 objects with captions; exact count",
    ),
)


def _register() -> None:
    for bench in MULTIMODAL_BENCHMARKS:
        if find_benchmark(bench.name) is None:
            register(bench)


_register()
