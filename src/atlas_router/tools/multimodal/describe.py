"""A one-line text description of an image, so that text encoders and text-only models can see it.

Routers embed text: an image question is routed on ``routing_text(question, images)``, the question
followed by ``[image: chart, 640x480, OCR text: ...]`` for each image. The kind (photo, chart, table,
diagram, document, illustration) comes from cheap pixel statistics of a thumbnail plus the OCR words;
it is a hint for routing, not a classifier to trust. Descriptions are cached by image hash.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from atlas_router.errors import AtlasError
from atlas_router.core.images import ImageInput, ImageSource, load_image

THUMB_SIDE = 256
_CACHE: OrderedDict[tuple[str, bool, int], str] = OrderedDict()
_CACHE_SIZE = 512


@dataclass
class ImageStats:
    """Pixel statistics of a thumbnail that separate the kinds of images routers care about."""

    colours: int  # distinct colours at 4 bits per channel
    light: float  # share of near-white pixels (paper, chart background)
    saturated: float  # share of strongly coloured pixels (bars, pie slices, marked shapes)
    dark: float  # share of dark pixels (ink, lines)
    h_lines: int  # rows that are mostly dark: table rules, axes
    v_lines: int  # columns that are mostly dark


def image_stats(img: Image.Image) -> ImageStats:
    thumb = img.convert("RGB")
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    a = np.asarray(thumb, dtype=np.int16)
    hi, lo = a.max(axis=2), a.min(axis=2)
    saturation = (hi - lo) / np.maximum(hi, 1)
    quantised = (a >> 4).reshape(-1, 3)
    colours = len(np.unique(quantised[:, 0] * 256 + quantised[:, 1] * 16 + quantised[:, 2]))
    dark_mask = hi < 90
    rows = dark_mask.mean(axis=1)
    cols = dark_mask.mean(axis=0)
    return ImageStats(
        colours=colours,
        light=float((lo > 225).mean()),
        saturated=float(((saturation > 0.35) & (hi > 60)).mean()),
        dark=float(dark_mask.mean()),
        h_lines=_runs(rows > 0.5),
        v_lines=_runs(cols > 0.5),
    )


def _runs(flags: np.ndarray) -> int:
    """Number of separate runs of True (a 2-px thick rule counts once)."""
    f = flags.astype(np.int8)
    return int(((f[1:] == 1) & (f[:-1] == 0)).sum() + (f[0] == 1 if len(f) else 0))


def classify(stats: ImageStats, words: Sequence[str] = ()) -> str:
    """The kind of image: photo, table, chart, document, diagram, illustration or image."""
    numbers = sum(bool(re.search(r"\d", w)) for w in words)
    if stats.colours > 600 and stats.light < 0.5:
        return "photo"
    if stats.h_lines >= 3 and stats.v_lines >= 2:
        return "table"
    axes = stats.h_lines >= 1 and stats.v_lines >= 1
    if stats.saturated > 0.02 and (axes or numbers >= 2):
        return "chart"
    if len(words) >= 12 and stats.saturated < 0.02:
        return "document"
    if stats.saturated > 0.02:
        return "illustration"
    if stats.dark > 0.002 and stats.light > 0.6:
        return "diagram"
    return "photo" if stats.colours > 200 else "image"


def _ocr_words(image: ImageInput) -> list[str]:
    from atlas_router.tools.multimodal.ocr import ocr_image

    try:
        result = ocr_image(image, psm=11, rotate="none", timeout_s=20)
    except (AtlasError, RuntimeError, OSError):
        return []  # no tesseract, or it failed: describe without text
    return [w.text for w in result.words if w.confidence >= 50 and any(ch.isalnum() for ch in w.text)]


def describe_image(image: ImageSource, *, ocr: bool = True, max_text_chars: int = 160) -> str:
    """``[image: KIND, WxH, OCR text: ...]``: what a text-only encoder or model can know of an image."""
    img = load_image(image)
    key = (img.sha256, ocr, max_text_chars)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    words = _ocr_words(img) if ocr else []
    kind = classify(image_stats(img.to_pil()), words)
    parts = [kind, f"{img.width}x{img.height}"]
    if ocr:
        text = " ".join(words)
        if len(text) > max_text_chars:
            text = text[: max_text_chars].rsplit(" ", 1)[0] + " ..."
        parts.append(f"OCR text: {text}" if text else "no text")
    description = f"[image: {', '.join(parts)}]"
    _CACHE[key] = description
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return description


def routing_text(question: str, images: Sequence[ImageSource] | None = None, *, ocr: bool = True) -> str:
    """The text a router embeds for an image question: the question, then one description per image."""
    if not images:
        return question
    return "\n".join([question, *(describe_image(img, ocr=ocr) for img in images)])
