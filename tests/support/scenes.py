"""Images the multimodal tests render with Pillow, with their known content: text, charts, tables,
counting scenes and geometry figures. The fake VLM server answers from this content (by image hash)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")


def font(name: str = "DejaVuSans.ttf", size: int = 20) -> ImageFont.ImageFont:
    """A DejaVu font when installed (setup.sh installs fonts-dejavu-core), else Pillow's own scalable font."""
    path = FONT_DIR / name
    if path.is_file():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def render_text(text: str, font_name: str = "DejaVuSans.ttf", size: int = 22, margin: int = 24) -> Image.Image:
    f = font(font_name, size)
    probe = ImageDraw.Draw(Image.new("L", (8, 8)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=f, spacing=size // 3)
    img = Image.new("RGB", (right + 2 * margin, bottom + 2 * margin), "white")
    ImageDraw.Draw(img).multiline_text((margin, margin), text, font=f, fill="black", spacing=size // 3)
    return img


def gaussian_noise(img: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    a = np.asarray(img.convert("L"), dtype=np.float32)
    a = a + np.random.default_rng(seed).normal(0.0, sigma, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def salt_pepper(img: Image.Image, amount: float, seed: int = 0) -> Image.Image:
    a = np.asarray(img.convert("L")).copy()
    r = np.random.default_rng(seed).random(a.shape)
    a[r < amount / 2] = 0
    a[r > 1 - amount / 2] = 255
    return Image.fromarray(a)


def png_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@dataclass
class Scene:
    """A rendered image and what is in it."""

    kind: str
    image: Image.Image
    truth: dict[str, Any] = field(default_factory=dict)


def bar_chart(values: dict[str, float], title: str = "Sales by year", size=(640, 480)) -> Scene:
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    f = font(size=16)
    d.text((w // 2 - 80, 12), title, font=font(size=20), fill="black")
    x0, y0, x1, y1 = 70, 60, w - 30, h - 60
    d.line([(x0, y0), (x0, y1), (x1, y1)], fill="black", width=3)
    top = max(values.values()) * 1.15
    slot = (x1 - x0) / len(values)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, (label, value) in enumerate(values.items()):
        bx = x0 + slot * i + slot * 0.2
        by = y1 - (y1 - y0) * value / top
        d.rectangle([bx, by, bx + slot * 0.6, y1 - 2], fill=colours[i % len(colours)])
        d.text((bx, by - 22), f"{value:g}", font=f, fill="black")
        d.text((bx, y1 + 8), label, font=f, fill="black")
    return Scene("chart", img, {"title": title, "columns": ["label", "value"],
                                "rows": [[k, v] for k, v in values.items()]})


def table_image(rows: list[list[str]], size_font: int = 18) -> Scene:
    f = font(size=size_font)
    cw, rh = 150, 40
    img = Image.new("RGB", (cw * len(rows[0]) + 20, rh * len(rows) + 20), "white")
    d = ImageDraw.Draw(img)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            d.text((10 + c * cw + 10, 10 + r * rh + 10), cell, font=f, fill="black")
    for r in range(len(rows) + 1):
        d.line([(10, 10 + r * rh), (10 + cw * len(rows[0]), 10 + r * rh)], fill="black", width=2)
    for c in range(len(rows[0]) + 1):
        d.line([(10 + c * cw, 10), (10 + c * cw, 10 + rh * len(rows))], fill="black", width=2)
    return Scene("table", img, {"rows": rows})


def counting_scene(n: int, colour: str = "red", shape: str = "circle", distractors: int = 3, seed: int = 0,
                   size=(480, 360)) -> Scene:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, (235, 240, 245))
    d = ImageDraw.Draw(img)
    boxes: list[list[int]] = []
    placed: list[tuple[int, int]] = []

    def spot() -> tuple[int, int]:
        for _ in range(500):
            x, y = int(rng.integers(30, size[0] - 30)), int(rng.integers(30, size[1] - 30))
            if all(math.hypot(x - a, y - b) > 50 for a, b in placed):
                placed.append((x, y))
                return x, y
        raise RuntimeError("scene too crowded")

    for _ in range(n):
        x, y = spot()
        box = [x - 18, y - 18, x + 18, y + 18]
        (d.ellipse if shape == "circle" else d.rectangle)(box, fill=colour)
        boxes.append(box)
    for _ in range(distractors):
        x, y = spot()
        d.rectangle([x - 15, y - 15, x + 15, y + 15], fill="blue")
    return Scene("counting", img, {"object": f"{colour} {shape}", "count": n, "boxes": boxes})


def triangle_scene(a: float = 3, b: float = 4) -> Scene:
    """A right triangle ABC with legs AB=a and BC=b drawn and labelled; the hypotenuse AC is asked."""
    img = Image.new("RGB", (420, 340), "white")
    d = ImageDraw.Draw(img)
    s = 60
    A, B = (60, 280 - a * s), (60, 280)
    C = (60 + b * s, 280)
    d.line([A, B, C, A], fill="black", width=3)
    d.rectangle([60, 262, 78, 280], outline="black", width=2)
    f = font(size=20)
    d.text((A[0] - 30, A[1] - 10), "A", font=f, fill="black")
    d.text((B[0] - 30, B[1] - 5), "B", font=f, fill="black")
    d.text((C[0] + 8, C[1] - 5), "C", font=f, fill="black")
    d.text((A[0] - 40, (A[1] + B[1]) / 2), f"{a:g}", font=f, fill="black")
    d.text(((B[0] + C[0]) / 2, B[1] + 8), f"{b:g}", font=f, fill="black")
    return Scene("geometry", img, {"points": ["A", "B", "C"], "lines": [["A", "B"], ["B", "C"], ["A", "C"]],
                                   "lengths": {"AB": a, "BC": b}, "angles": {"ABC": 90},
                                   "answer": math.hypot(a, b)})


def photo_like(seed: int = 0, size=(320, 240)) -> Image.Image:
    """Smooth random colour field with texture: many colours, no white page (what a photo looks like)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    base = np.stack([np.sin(xx / 23 + c) * 60 + np.cos(yy / 17 + 2 * c) * 60 + 110 for c in range(3)], axis=-1)
    base = base + rng.normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
