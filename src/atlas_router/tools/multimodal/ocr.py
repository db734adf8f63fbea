"""The OCR tool: read the text of a question's images with Tesseract (through pytesseract).

Before recognition each image is prepared the way Tesseract reads best: grayscale, a 3x3 median
filter when salt-and-pepper or grain noise is detected on the flat background, and upscaling of small
images (Tesseract wants text about 20-30 px high). Rotated scans are turned upright: Tesseract's
orientation detection (OSD) first, and when it cannot decide or the result reads poorly, every quarter
turn is tried and the one whose words are recognised with the most confidence is kept.

The result is structured: the text (lines kept), every word with its box and confidence, the mean
confidence, the rotation applied and the preprocessing steps; boxes are in pixels of the upright,
original-size image.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from atlas_router.errors import AtlasError
from atlas_router.core.images import ImageInput
from atlas_router.tools.base import Tool, ToolContext, ToolResult
from atlas_router.tools.multimodal.common import context_images, find_call, parse_image_call
from atlas_router.tools.settings_check import reject_unknown

NOISE_THRESHOLD = 0.01  # share of flat-background pixels that are outliers: above it, denoise
TARGET_SIDE = 1600  # upscale images whose longer side is below half of this
MAX_UPSCALED_PIXELS = 12_000_000
GOOD_CONFIDENCE = 75.0  # mean word confidence at which the upright guess is accepted without a search
ROTATIONS = (0, 90, 180, 270)
SPARSE_BELOW = 6  # fewer words than this from the page layout: also try sparse-text mode


class OCRUnavailable(AtlasError):
    """Tesseract or pytesseract is missing; the message says how to install them."""


def _pytesseract() -> Any:
    try:
        import pytesseract
    except ImportError:
        raise OCRUnavailable("the OCR tool needs pytesseract: pip install 'atlas-router[ocr]'") from None
    try:
        pytesseract.get_tesseract_version()
    except pytesseract.TesseractNotFoundError:
        raise OCRUnavailable("the OCR tool needs the tesseract program: apt-get install tesseract-ocr") from None
    return pytesseract


@dataclass
class OCRWord:
    text: str
    confidence: float
    box: tuple[int, int, int, int]  # left, top, width, height
    line: int


@dataclass
class OCRResult:
    """What Tesseract read in one image."""

    text: str
    words: list[OCRWord]
    confidence: float
    rotation: int  # degrees the image was turned clockwise to be upright
    preprocessing: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0

    @property
    def score(self) -> float:
        """Confidence-weighted amount of text: how well an orientation reads."""
        return sum(w.confidence * sum(ch.isalnum() for ch in w.text) for w in self.words) / 100.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["words"] = [{**w, "box": list(w["box"])} for w in d["words"]]
        return d


def noise_level(gray: Image.Image) -> float:
    """Share of pixels on flat background that stand out from their 3x3 median (isolated specks)."""
    med = gray.filter(ImageFilter.MedianFilter(3))
    a = np.asarray(gray, dtype=np.int16)
    m = np.asarray(med, dtype=np.int16)
    spread = (np.asarray(med.filter(ImageFilter.MaxFilter(3)), dtype=np.int16)
              - np.asarray(med.filter(ImageFilter.MinFilter(3)), dtype=np.int16))
    flat = spread < 40
    if not flat.any():
        return 0.0
    return float(((np.abs(a - m) > 40) & flat).sum() / flat.sum())


def _long_runs(mask: np.ndarray, length: int) -> np.ndarray:
    """The pixels of horizontal runs of True at least ``length`` long (transpose for vertical)."""
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)  # same row-major order as the starts
    out = np.zeros_like(mask, dtype=bool)
    for r, s, e in zip(rows, starts, ends):
        if e - s >= length:
            out[r, s:e] = True
    return out


def remove_rules(gray: Image.Image) -> tuple[Image.Image, bool]:
    """White out long horizontal and vertical lines (table rules, axes, frames): Tesseract reads the
    text of ruled cells as one dark blob otherwise."""
    a = np.asarray(gray)
    dark = a < 128
    length = max(60, min(gray.size) // 6)
    lines = _long_runs(dark, length) | _long_runs(dark.T, length).T
    if not lines.any():
        return gray, False
    grown = lines.copy()  # anti-aliased edges of the rules go too
    grown[1:] |= lines[:-1]
    grown[:-1] |= lines[1:]
    grown[:, 1:] |= lines[:, :-1]
    grown[:, :-1] |= lines[:, 1:]
    out = a.copy()
    out[grown] = 255
    return Image.fromarray(out), True


def preprocess(img: Image.Image, denoise: bool | None = None) -> tuple[Image.Image, float, list[str]]:
    """Grayscale, denoised when noisy (or when ``denoise`` says so), upscaled when small, long ruled
    lines removed.

    Returns the prepared image, the scale applied and the names of the steps taken.
    """
    steps = ["grayscale"]
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
        steps.insert(0, "flatten-alpha")
    gray = img.convert("L")
    if denoise is None:
        denoise = noise_level(gray) > NOISE_THRESHOLD
    if denoise:
        gray = gray.filter(ImageFilter.MedianFilter(3))
        steps.append("median-3")
    scale = 1.0
    longest = max(gray.size)
    if longest < TARGET_SIDE / 2:
        scale = min(3.0, TARGET_SIDE / longest)
        if gray.width * gray.height * scale * scale > MAX_UPSCALED_PIXELS:
            scale = (MAX_UPSCALED_PIXELS / (gray.width * gray.height)) ** 0.5
        if scale > 1.05:
            gray = gray.resize((round(gray.width * scale), round(gray.height * scale)), Image.LANCZOS)
            steps.append(f"upscale-{scale:.2g}x")
        else:
            scale = 1.0
    gray, removed = remove_rules(gray)
    if removed:
        steps.append("remove-lines")
    return gray, scale, steps


def _read(pt: Any, gray: Image.Image, lang: str, psm: int, timeout_s: float, scale: float) -> tuple[str, list[OCRWord]]:
    data = pt.image_to_data(gray, lang=lang, config=f"--psm {psm}", output_type=pt.Output.DICT, timeout=timeout_s)
    words: list[OCRWord] = []
    lines: dict[tuple[int, int, int], list[str]] = {}
    for i, text in enumerate(data["text"]):
        text = (text or "").strip()
        conf = float(data["conf"][i])
        if not text or conf < 0:
            continue
        key = (int(data["block_num"][i]), int(data["par_num"][i]), int(data["line_num"][i]))
        lines.setdefault(key, []).append(text)
        box = tuple(round(int(data[k][i]) / scale) for k in ("left", "top", "width", "height"))
        words.append(OCRWord(text=text, confidence=round(conf, 1), box=box, line=len(lines) - 1))  # type: ignore[arg-type]
    return "\n".join(" ".join(ws) for ws in lines.values()), words


def _osd_rotation(pt: Any, gray: Image.Image, timeout_s: float) -> int | None:
    """Clockwise degrees that make the image upright according to Tesseract OSD, or None if unsure."""
    try:
        osd = pt.image_to_osd(gray, config="--psm 0", output_type=pt.Output.DICT, timeout=timeout_s)
    except (pt.TesseractError, RuntimeError, ValueError):
        return None  # too little text to decide
    if float(osd.get("orientation_conf", 0.0)) < 1.0:
        return None
    return int(osd.get("rotate", 0)) % 360


def ocr_image(image: ImageInput | Image.Image, *, lang: str = "eng", psm: int | str = "auto", rotate: str = "auto",
              denoise: bool | None = None, timeout_s: float = 30.0) -> OCRResult:
    """Read the text of one image (blocking: Tesseract runs as a subprocess).

    ``psm``: a Tesseract page segmentation mode, or ``auto`` (page layout, and sparse-text mode as well
    when the page layout finds few words: labels of charts, diagrams and tables).
    ``rotate``: ``auto`` (OSD, then a search over quarter turns when unsure or poorly read), ``search``
    (always try every quarter turn) or ``none``.
    """
    if rotate not in ("auto", "search", "none"):
        raise AtlasError(f"rotate must be auto, search or none, got {rotate!r}")
    pt = _pytesseract()
    pil = image.to_pil() if isinstance(image, ImageInput) else image
    gray, scale, steps = preprocess(pil, denoise)

    def read(turned: Image.Image, angle: int, mode: int) -> OCRResult:
        text, words = _read(pt, turned, lang, mode, timeout_s, scale)
        conf = float(np.mean([w.confidence for w in words])) if words else 0.0
        return OCRResult(text=text, words=words, confidence=round(conf, 1), rotation=angle,
                         preprocessing=list(steps), width=round(turned.width / scale), height=round(turned.height / scale))

    def attempt(angle: int, sparse: bool = True) -> OCRResult:
        turned = gray.rotate(-angle, expand=True) if angle else gray
        if psm != "auto":
            return read(turned, angle, int(psm))
        page = read(turned, angle, 3)
        if len(page.words) >= SPARSE_BELOW or not sparse:
            return page
        sparse = read(turned, angle, 11)
        return sparse if sparse.score > page.score else page

    tried: dict[int, OCRResult] = {}
    first = 0
    if rotate == "auto":
        first = _osd_rotation(pt, gray, timeout_s) or 0
    tried[first] = attempt(first)
    good = tried[first].confidence >= GOOD_CONFIDENCE and tried[first].score > 0
    if rotate == "search" or (rotate == "auto" and not good):
        for angle in ROTATIONS:
            if angle not in tried:
                tried[angle] = attempt(angle, sparse=False)
    best = max(tried.values(), key=lambda r: r.score)
    base = tried[first]
    if best.score < base.score * 1.2 + 1 or best.confidence < base.confidence:
        best = base  # a few letters read sideways are no reason to turn
    if best.rotation:
        best.preprocessing.append(f"rotate-{best.rotation}")
    return best


def find_ocr_call(text: str) -> str | None:
    """The first ``ocr(...)`` call in model text."""
    return find_call(text, ("ocr",))


class OCRTool(Tool):
    """Tesseract OCR on the question's images (settings: lang, psm, rotate, denoise, timeout_s,
    max_chars; prefetch defaults to true so the text is read before the model's first turn)."""

    kind = "ocr"
    mode = "loop"
    input_kind: ClassVar[str] = "image"
    sample_input = "ocr(image=1)"

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        reject_unknown(self.settings, ("lang", "psm", "rotate", "denoise", "timeout_s", "max_chars"))
        self.prefetch = bool(spec.settings.get("prefetch", True))
        self.lang = str(self.settings.get("lang", "eng"))
        if not re.fullmatch(r"[A-Za-z_]+(?:\+[A-Za-z_]+)*", self.lang):
            raise ValueError(f"lang must be Tesseract language codes like eng or eng+deu, got {self.lang!r}")
        psm = self.settings.get("psm", "auto")
        self.psm: int | str = psm if psm == "auto" else int(psm)
        self.rotate = str(self.settings.get("rotate", "auto"))
        denoise = self.settings.get("denoise", "auto")
        self.denoise = None if denoise == "auto" else bool(denoise)
        self.timeout_s = float(self.settings.get("timeout_s", 30.0))
        self.max_chars = int(self.settings.get("max_chars", 4000))
        bad_psm = self.psm != "auto" and not 0 <= int(self.psm) <= 13
        if bad_psm or self.rotate not in ("auto", "search", "none") or self.timeout_s <= 0:
            raise ValueError("psm must be auto or 0..13, rotate auto|search|none and timeout_s positive")

    def usage(self) -> str:
        return ("The question comes with an image. To read the text in it, write on its own line:\n"
                "ocr(image=1)\nYou will get the text back; then continue.")

    def extract_call(self, text: str) -> str | None:
        return find_ocr_call(text)

    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        try:
            targets = context_images(parse_image_call(tool_input, ("ocr",)), context, self.name)
            results = []
            for _, img in targets:
                results.append(await asyncio.to_thread(
                    ocr_image, img, lang=self.lang, psm=self.psm, rotate=self.rotate, denoise=self.denoise,
                    timeout_s=self.timeout_s))
        except AtlasError as err:
            return ToolResult(ok=False, output="", error=str(err))
        except RuntimeError as err:  # pytesseract reports a timeout this way
            return ToolResult(ok=False, output="", error=f"tesseract failed: {err}")
        chunks = []
        for (n, img), res in zip(targets, results):
            turned = f", turned {res.rotation} degrees" if res.rotation else ""
            head = f"Image {n} ({img.width}x{img.height}{turned}, confidence {res.confidence:.0f}):"
            chunks.append(f"{head}\n{res.text or '(no text found)'}")
        output = "\n\n".join(chunks)
        if len(output) > self.max_chars:
            output = output[: self.max_chars] + "\n[... truncated]"
        data = {"images": [{"image": n, **res.to_dict()} for (n, _), res in zip(targets, results)]}
        if len(results) == 1:
            data.update(text=results[0].text, words=data["images"][0]["words"], confidence=results[0].confidence,
                        rotation=results[0].rotation)
        return ToolResult(ok=True, output=output, data=data)
