"""What the image tools share: reading a call (which image, which question) and finding its images.

A tool call written by a model may only point at the question's own images (``image=2``) or carry an
inline ``data:`` URL; paths and http URLs in model text are never opened, so a model cannot make a
tool read files or reach hosts. Local files come in only through the caller (``atlas tool --image`` /
``atlas ask --image``), already checked, in ``ToolContext.images``.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any

from atlas_router.core.answers import first_json_object
from atlas_router.core.images import ImageError, ImageInput, load_image
from atlas_router.tools.base import ToolContext


@dataclass
class ImageCall:
    """One call of an image tool: the image it names (1-based index or data URL) and its question."""

    image: int | str | None = None
    question: str = ""


def find_call(text: str, names: tuple[str, ...]) -> str | None:
    """The first complete ``name(...)`` call in model text whose arguments parse as Python literals."""
    for match in re.finditer(rf"\b(?:{'|'.join(map(re.escape, names))})\s*\(", text or ""):
        for end in range(match.end(), len(text)):
            if text[end] == ")":
                candidate = text[match.start() : end + 1]
                try:
                    ast.parse(candidate, mode="eval")
                except SyntaxError:
                    continue
                return candidate
    return None


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ImageError("tool arguments must be literal values, e.g. image=1, question=\"...\"") from None


def _from_mapping(data: dict[str, Any]) -> ImageCall:
    unknown = set(data) - {"image", "question"}
    if unknown:
        raise ImageError(f"unknown argument(s) {', '.join(sorted(unknown))}; use image and question")
    image = data.get("image")
    if image is not None and (isinstance(image, bool) or not isinstance(image, (int, str))):
        raise ImageError(f"image must be an image number (1, 2, ...) or a data: URL, got {image!r}")
    if isinstance(image, str) and image.strip().isdigit():
        image = int(image)
    return ImageCall(image=image, question=str(data.get("question") or ""))


def parse_image_call(text: str, names: tuple[str, ...]) -> ImageCall:
    """Read ``name(image=1, question="...")``, ``{"image": 1, "question": ...}``, ``image=2``, a ``data:``
    URL, or plain text (taken as the question: what prefetch and the command line pass)."""
    text = (text or "").strip()
    if text.startswith("data:"):
        return ImageCall(image=text)
    call = find_call(text, names)
    if call is not None:
        node = ast.parse(call, mode="eval").body
        assert isinstance(node, ast.Call)
        data: dict[str, Any] = {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}
        for arg in node.args:
            value = _literal(arg)
            data.setdefault("image" if isinstance(value, int) else "question", value)
        return _from_mapping(data)
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            return _from_mapping(obj)
    m = re.fullmatch(r"(?:image\s*=?\s*)?(\d+)", text, re.IGNORECASE)
    if m:
        return ImageCall(image=int(m.group(1)))
    return ImageCall(question=text)


def context_images(call: ImageCall, context: ToolContext, tool_name: str) -> list[tuple[int, ImageInput]]:
    """The (number, image) pairs a call works on: the named one, or every image of the question."""
    if isinstance(call.image, str):
        if not call.image.startswith("data:"):
            raise ImageError(f"{tool_name}: an image argument must be a number or a data: URL; "
                             "paths and web URLs in tool calls are not opened")
        return [(1, load_image(call.image, allow_local=False))]
    attached = [load_image(img, allow_local=False) if not isinstance(img, ImageInput) else img
                for img in (context.images or [])]
    if not attached:
        raise ImageError(f"{tool_name}: the question has no image attached (use --image PATH or an image_url part)")
    if call.image is not None:
        if not 1 <= call.image <= len(attached):
            raise ImageError(f"{tool_name}: image={call.image} does not exist; the question has "
                             f"{len(attached)} image(s)")
        return [(call.image, attached[call.image - 1])]
    return list(enumerate(attached, 1))


def parse_json_reply(text: str) -> dict[str, Any]:
    """The first JSON object in a model reply (code fences and chatter around it are ignored)."""
    found = first_json_object(re.sub(r"```(?:json)?", "", text or ""))
    if found is None:
        raise ValueError("no JSON object in the reply")
    return found[0]


_ANSWER = re.compile(r"(?:final answer|answer)\s*[:=]\s*(.+)", re.IGNORECASE)


def answer_line(text: str) -> str:
    """The value after the last ``Answer:`` in a reply, or its last non-empty line."""
    found = _ANSWER.findall(text or "")
    if found:
        return found[-1].strip().rstrip(".").strip()
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""
