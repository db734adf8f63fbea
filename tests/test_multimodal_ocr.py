"""OCR with the real Tesseract on images rendered here (DejaVu fonts at several sizes, rotated, noisy),
scored by character accuracy (1 - normalised edit distance), which each test prints; plus the tool,
its CLI and the image descriptions routers embed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
import yaml
from rapidfuzz.distance import Levenshtein

from atlas_router.config import ToolSpec
from atlas_router.core.images import load_image
from atlas_router.tools.base import ToolContext
from atlas_router.tools.multimodal.describe import describe_image, routing_text
from atlas_router.tools.multimodal.ocr import noise_level, ocr_image
from atlas_router.tools.registry import build_tool
from support.scenes import (
    bar_chart,
    counting_scene,
    gaussian_noise,
    photo_like,
    png_bytes,
    render_text,
    salt_pepper,
    table_image,
    triangle_scene,
)

TEXT = "The quick brown fox jumps over 13 lazy dogs.\nInvoice total: $4,250.75 due 2024-03-15"
SHORT = "Meeting moved to room 42 at 3 pm"


def char_accuracy(read: str, truth: str) -> float:
    """1 - normalised edit distance, whitespace collapsed (line breaks are layout, not content)."""
    return 1.0 - Levenshtein.normalized_distance(" ".join(read.split()), " ".join(truth.split()))


def check(label: str, image, truth: str, floor: float):
    result = ocr_image(image)
    acc = char_accuracy(result.text, truth)
    print(f"\nOCR {label}: character accuracy {acc:.3f} (floor {floor}), steps {result.preprocessing}")
    assert acc >= floor, (label, result.text)
    return result


@pytest.mark.parametrize("font,size", [("DejaVuSans.ttf", 11), ("DejaVuSerif.ttf", 16), ("DejaVuSansMono.ttf", 22),
                                       ("DejaVuSans.ttf", 36)])
def test_clean_text_in_several_fonts_and_sizes(font, size):
    result = check(f"{font} {size}px", render_text(TEXT, font, size), TEXT, 0.95)
    if size < 20:
        assert any(s.startswith("upscale") for s in result.preprocessing)
    assert result.confidence > 80 and result.rotation == 0


@pytest.mark.parametrize("angle", [90, 180, 270])
def test_rotated_text_is_turned_upright(angle):
    image = render_text(TEXT, "DejaVuSans.ttf", 20).rotate(angle, expand=True)
    result = check(f"rotated {angle}", image, TEXT, 0.93)
    assert result.width > result.height  # reported in the upright image's frame


@pytest.mark.parametrize("kind,amount", [("gaussian", 40), ("gaussian", 70), ("salt", 0.05), ("salt", 0.10)])
def test_noisy_text_is_denoised(kind, amount):
    clean = render_text(TEXT, "DejaVuSerif.ttf", 24)
    noisy = gaussian_noise(clean, amount, seed=1) if kind == "gaussian" else salt_pepper(clean, amount, seed=1)
    assert noise_level(noisy.convert("L")) > 0.01 > noise_level(clean.convert("L"))
    result = check(f"{kind} noise {amount}", noisy, TEXT, 0.9)
    assert "median-3" in result.preprocessing


def test_rotated_and_noisy_together():
    image = salt_pepper(render_text(SHORT, "DejaVuSans.ttf", 26), 0.05, seed=2).rotate(180, expand=True)
    result = check("rotated 180 + salt 5%", image, SHORT, 0.9)
    assert result.rotation == 180 and "rotate-180" in result.preprocessing


def test_words_come_with_boxes_and_confidences():
    image = render_text("alpha beta\ngamma delta", "DejaVuSans.ttf", 30, margin=40)
    result = ocr_image(image)
    words = {w.text: w for w in result.words}
    assert set(words) == {"alpha", "beta", "gamma", "delta"}
    alpha, delta = words["alpha"].box, words["delta"].box
    assert 30 <= alpha[0] <= 50 and 30 <= alpha[1] <= 55  # near the 40 px margin, in original pixels
    assert delta[0] > alpha[0] and delta[1] > alpha[1] + 20  # right of and below
    assert all(0 < w.confidence <= 100 and w.box[2] > 0 and w.box[3] > 0 for w in result.words)
    assert words["gamma"].line == words["delta"].line != words["alpha"].line


def test_ruled_table_cells_are_read():
    scene = table_image([["Item", "Qty", "Price"], ["apple", "3", "1.20"], ["pear", "5", "0.80"]])
    result = ocr_image(scene.image)
    read = set(result.text.split())
    print(f"\nOCR table: read {sorted(read)}")
    assert {"Item", "Price", "apple", "pear", "1.20", "0.80"} <= read
    assert "remove-lines" in result.preprocessing


def ocr_tool():
    return build_tool(ToolSpec(name="ocr", kind="ocr"))


def test_ocr_tool_reads_the_questions_images():
    tool = ocr_tool()
    assert tool.prefetch and tool.extract_call("Let me look.\nocr(image=2)\n") == "ocr(image=2)"
    first, second = (load_image(png_bytes(render_text(t, size=24))) for t in ("INVOICE 2291", "Total due: 17.50"))
    ctx = ToolContext(question="What is the total?", images=[first, second])
    both = asyncio.run(tool.run("What is the total?", ctx))
    assert both.ok and "Image 1" in both.output and "Image 2" in both.output
    assert [d["image"] for d in both.data["images"]] == [1, 2]
    one = asyncio.run(tool.run("ocr(image=2)", ctx))
    assert one.ok and "Total due: 17.50" in one.data["text"] and "INVOICE" not in one.output
    assert one.data["words"][0]["text"] == "Total"
    assert "does not exist" in asyncio.run(tool.run("ocr(image=5)", ctx)).error
    assert "not opened" in asyncio.run(tool.run('ocr(image="/etc/hostname")', ctx)).error
    assert "no image attached" in asyncio.run(tool.run("ocr()", ToolContext())).error


def test_cli_tool_ocr_path_json(tmp_path):
    (tmp_path / "note.png").write_bytes(png_bytes(render_text(SHORT, size=24)))
    pool = tmp_path / "pool.yaml"
    pool.write_text(yaml.safe_dump({
        "models": [{"name": "m", "backend": "openai", "endpoint": "http://127.0.0.1:9/v1"}],
        "tools": [{"name": "ocr", "kind": "ocr", "settings": {"rotate": "none"}}],
    }))
    base = [sys.executable, "-m", "atlas_router", "tool", "ocr"]
    done = subprocess.run([*base, str(tmp_path / "note.png"), "--pool", str(pool), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and char_accuracy(result["data"]["text"], SHORT) > 0.95
    assert result["data"]["words"][0]["box"] and result["data"]["rotation"] == 0

    (tmp_path / "fake.png").write_text("#!/bin/sh\necho not an image\n")
    done = subprocess.run([*base, str(tmp_path / "fake.png"), "--pool", str(pool)], capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "not an image" in lines[0]

    # no tesseract on PATH: a clear install hint, not a crash
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}
    done = subprocess.run([*base, str(tmp_path / "note.png"), "--pool", str(pool)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 1 and "apt-get install tesseract-ocr" in done.stderr


def test_describe_image_for_routers():
    chart = describe_image(png_bytes(bar_chart({"2019": 12, "2020": 30, "2021": 25}).image))
    assert chart.startswith("[image: chart, 640x480, OCR text: ") and "Sales by year" in chart and "2020" in chart
    table = describe_image(png_bytes(table_image([["Item", "Qty"], ["apple", "3"], ["pear", "5"]]).image))
    assert table.startswith("[image: table, ") and "apple" in table
    document = describe_image(png_bytes(render_text("Dear customer,\nyour order of 12 May has shipped and will "
                                                    "arrive\nwithin five working days. Kind regards", size=20)))
    assert document.startswith("[image: document, ") and "order" in document
    assert describe_image(png_bytes(photo_like()), ocr=False) == "[image: photo, 320x240]"
    assert describe_image(png_bytes(triangle_scene().image), ocr=False).startswith("[image: diagram")
    assert describe_image(png_bytes(counting_scene(4).image)) == "[image: illustration, 480x360, no text]"
    text = routing_text("Which year sold most?", [png_bytes(bar_chart({"2019": 12, "2020": 30}).image)])
    assert text.splitlines()[0] == "Which year sold most?" and text.splitlines()[1].startswith("[image: chart")
    assert routing_text("plain question", []) == "plain question"
