"""Image inputs: read an image from a local file, a data URL or an http(s) URL, check it, and hand it to
vision models as an OpenAI-style content part.

Every image is decoded by Pillow before any model sees it, so only real PNG/JPEG/WebP/GIF/BMP data
passes. Refused with a one-line ImageError: other formats (SVG, HTML, scripts), files over the byte
limit, images over the pixel limit (decompression bombs are caught from the header, before decoding),
truncated or corrupt data, a file name whose extension says another format than its content, paths
that leave their base directory, ``file://`` URLs, and http(s) URLs to hosts other than loopback unless
remote fetching is allowed (``allow_remote=True`` or ``ATLAS_ALLOW_REMOTE_IMAGES=1``). Remote fetches
have a timeout and stop reading at the byte limit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import ipaddress
import os
import re
import stat
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from atlas_router.errors import AtlasError

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
FETCH_TIMEOUT_S = 10.0
MAX_IMAGES = 8

# Pillow format name -> MIME type sent to models.
FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
}
# File extension -> the format its content must have.
EXTENSIONS: dict[str, str] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".webp": "WEBP",
    ".gif": "GIF", ".bmp": "BMP", ".dib": "BMP",
}
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,",
                       re.IGNORECASE)
_MARKUP = re.compile(rb"^\s*(?:\xef\xbb\xbf)?\s*<(?:\?xml|svg|!doctype|html|script)", re.IGNORECASE)


class ImageError(AtlasError):
    """An image that is refused; the message names the image and the reason in one line."""


@dataclass(frozen=True)
class ImageInput:
    """A checked image: the original bytes, their MIME type and size in pixels."""

    data: bytes
    mime: str
    width: int
    height: int
    source: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def format(self) -> str:
        return next(f for f, m in FORMATS.items() if m == self.mime)

    def to_pil(self) -> Image.Image:
        """The first frame as a Pillow image (decoded again: the bytes are the source of truth)."""
        img = Image.open(io.BytesIO(self.data), formats=[self.format])
        img.load()
        return img

    def to_data_url(self) -> str:
        return to_data_url(self)

    def label(self) -> str:
        """A short name for logs and records: the source, or the hash for inline data."""
        src = self.source
        if not src or src.startswith("data:"):
            src = f"sha256:{self.sha256[:12]}"
        return f"{src} ({self.mime}, {self.width}x{self.height})"


ImageSource = Union[str, os.PathLike, bytes, ImageInput, Image.Image]


def _short(source: str, limit: int = 80) -> str:
    if source.startswith("data:"):
        return source[: min(limit, source.find(",") + 1 or limit)] + "..."
    return source if len(source) <= limit else source[: limit - 3] + "..."


def decode_image(data: bytes, source: str = "image", *, expected_format: str | None = None,
                 max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageInput:
    """Check raw bytes are one allowed, complete, reasonably sized image; ImageError otherwise."""
    name = _short(source)
    if not data:
        raise ImageError(f"{name}: empty image")
    if len(data) > max_bytes:
        raise ImageError(f"{name}: {len(data):,} bytes; the limit is {max_bytes:,}")
    if _MARKUP.match(data[:512]):
        raise ImageError(f"{name}: SVG/XML/HTML content is not accepted; use PNG, JPEG, WebP, GIF or BMP")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(FORMATS))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(f"{name}: image has no pixels ({width}x{height})")
            if width * height > max_pixels:  # from the header only: nothing is decoded yet
                raise ImageError(f"{name}: {width}x{height} is {width * height:,} pixels; the limit is "
                                 f"{max_pixels:,} (decompression bomb?)")
            fmt = img.format
            img.load()  # decode now: truncated and corrupt data fail here, not in a tool later
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{name}: too many pixels, refused as a decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image in an accepted format (PNG, JPEG, WebP, GIF, BMP)") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, TypeError, IndexError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageError(f"{name}: corrupt or truncated image ({first})") from None
    if fmt not in FORMATS:
        raise ImageError(f"{name}: format {fmt} is not accepted; use PNG, JPEG, WebP, GIF or BMP")
    if expected_format and fmt != expected_format:
        raise ImageError(f"{name}: content is {fmt} but the name says {expected_format}; refusing a mislabelled file")
    return ImageInput(data=data, mime=FORMATS[fmt], width=width, height=height, source=source)


def _expected_format(name: str, source: str) -> str | None:
    suffix = Path(name).suffix.lower()
    if not suffix:
        return None
    if suffix not in EXTENSIONS:
        raise ImageError(f"{_short(source)}: '{suffix}' is not an image file extension "
                         f"(accepted: {', '.join(sorted(EXTENSIONS))})")
    return EXTENSIONS[suffix]


def _from_data_url(url: str, max_bytes: int, max_pixels: int) -> ImageInput:
    m = _DATA_URL.match(url)
    if not m:
        raise ImageError(f"{_short(url)}: malformed data URL (expected data:image/png;base64,...)")
    mime = (m.group("mime") or "").lower()
    if mime and not (mime.startswith("image/") or mime == "application/octet-stream"):
        raise ImageError(f"{_short(url)}: data URL type '{mime}' is not an image")
    if mime == "image/svg+xml":
        raise ImageError(f"{_short(url)}: SVG is not accepted; use PNG, JPEG, WebP, GIF or BMP")
    if not m.group("b64"):
        raise ImageError(f"{_short(url)}: data URL must be base64-encoded")
    payload = url[m.end():]
    if len(payload) > (max_bytes * 4) // 3 + 8:
        raise ImageError(f"{_short(url)}: about {len(payload) * 3 // 4:,} bytes; the limit is {max_bytes:,}")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{_short(url)}: data URL is not valid base64") from None
    return decode_image(data, url, max_bytes=max_bytes, max_pixels=max_pixels)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def remote_allowed(allow_remote: bool | None) -> bool:
    """Whether http(s) images may come from hosts other than loopback (argument, else the environment)."""
    if allow_remote is not None:
        return allow_remote
    from atlas_router.config import env_flag

    return env_flag("ATLAS_ALLOW_REMOTE_IMAGES")


def _from_http(url: str, *, allow_remote: bool | None, timeout_s: float, max_bytes: int,
               max_pixels: int) -> ImageInput:
    import httpx

    from atlas_router.core.http import sync_client

    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        raise ImageError(f"{_short(url)}: URL has no host")
    if not _is_loopback(host) and not remote_allowed(allow_remote):
        raise ImageError(f"{_short(url)}: fetching images from '{host}' is not allowed; download it and pass the "
                         "file, or allow remote images (ATLAS_ALLOW_REMOTE_IMAGES=1)")
    try:
        with sync_client(timeout_s, follow_redirects=False) as client:
            with client.stream("GET", url, headers={"accept": "image/*"}) as response:
                if 300 <= response.status_code < 400:
                    raise ImageError(f"{_short(url)}: HTTP {response.status_code} redirect; redirects are not "
                                     "followed, pass the final URL")
                if response.status_code != 200:
                    raise ImageError(f"{_short(url)}: HTTP {response.status_code}")
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise ImageError(f"{_short(url)}: {int(declared):,} bytes; the limit is {max_bytes:,}")
                buf = bytearray()
                for chunk in response.iter_bytes():
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise ImageError(f"{_short(url)}: more than {max_bytes:,} bytes; the limit is {max_bytes:,}")
    except httpx.TimeoutException:
        raise ImageError(f"{_short(url)}: no complete answer within {timeout_s:g}s") from None
    except httpx.HTTPError as err:
        raise ImageError(f"{_short(url)}: fetch failed ({type(err).__name__})") from None
    return decode_image(bytes(buf), url, max_bytes=max_bytes, max_pixels=max_pixels)


def confine(path: str | os.PathLike, base_dir: str | os.PathLike) -> Path:
    """``path`` resolved against ``base_dir`` (symlinks followed); ImageError when it ends up outside."""
    raw = os.fspath(path)
    if "\x00" in raw:
        raise ImageError("image path contains a NUL byte")
    base = Path(base_dir).expanduser().resolve()
    full = (base / Path(raw).expanduser()).resolve()
    if not full.is_relative_to(base):
        raise ImageError(f"{raw}: image path leaves its directory {base}; refused")
    return full


def _from_path(source: str | os.PathLike, base_dir: str | os.PathLike | None, max_bytes: int,
               max_pixels: int) -> ImageInput:
    raw = os.fspath(source)
    if "\x00" in raw:
        raise ImageError("image path contains a NUL byte")
    path = confine(raw, base_dir) if base_dir is not None else Path(raw).expanduser()
    expected = _expected_format(path.name, raw)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{raw}: image file not found") from None
    except OSError as err:
        raise ImageError(f"{raw}: cannot read image ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{raw}: not a regular file")
    if st.st_size > max_bytes:
        raise ImageError(f"{raw}: {st.st_size:,} bytes; the limit is {max_bytes:,}")
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as err:
        raise ImageError(f"{raw}: cannot read image ({err.strerror})") from None
    return decode_image(data, raw, expected_format=expected, max_bytes=max_bytes, max_pixels=max_pixels)


def _from_pil(img: Image.Image, max_bytes: int, max_pixels: int) -> ImageInput:
    if img.width * img.height > max_pixels:
        raise ImageError(f"image: {img.width}x{img.height} is over the {max_pixels:,} pixel limit")
    buf = io.BytesIO()
    frame = img if img.mode in ("RGB", "RGBA", "L", "LA", "P", "1") else img.convert("RGB")
    frame.save(buf, format="PNG")
    return decode_image(buf.getvalue(), "image", max_bytes=max_bytes, max_pixels=max_pixels)


def load_image(source: ImageSource, *, base_dir: str | os.PathLike | None = None, allow_local: bool = True,
               allow_remote: bool | None = None, timeout_s: float = FETCH_TIMEOUT_S,
               max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageInput:
    """A checked image from a path, ``data:`` URL, ``http(s)://`` URL, raw bytes or a Pillow image.

    ``base_dir`` resolves relative paths and confines them to that directory; ``allow_local=False``
    refuses file paths entirely (for URLs that arrive over the network).
    """
    if isinstance(source, ImageInput):
        return source
    if isinstance(source, Image.Image):
        return _from_pil(source, max_bytes, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), "image bytes", max_bytes=max_bytes, max_pixels=max_pixels)
    if isinstance(source, dict):  # the Hugging Face datasets form: {"bytes": ..., "path": ...}
        if source.get("bytes"):
            return decode_image(bytes(source["bytes"]), str(source.get("path") or "image bytes"),
                                max_bytes=max_bytes, max_pixels=max_pixels)
        if source.get("path"):
            return load_image(str(source["path"]), base_dir=base_dir, allow_local=allow_local,
                              allow_remote=allow_remote, timeout_s=timeout_s, max_bytes=max_bytes,
                              max_pixels=max_pixels)
        raise ImageError("image mapping has neither 'bytes' nor 'path'")
    if not isinstance(source, (str, os.PathLike)):
        raise ImageError(f"an image must be a path, URL or bytes, got {type(source).__name__}")
    text = os.fspath(source)
    text = text.strip() if isinstance(text, str) else text
    if not text:
        raise ImageError("empty image reference")
    scheme = text.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text) else ""
    if scheme == "data":
        return _from_data_url(text, max_bytes, max_pixels)
    if scheme in ("http", "https"):
        return _from_http(text, allow_remote=allow_remote, timeout_s=timeout_s, max_bytes=max_bytes,
                          max_pixels=max_pixels)
    if scheme == "file":
        raise ImageError(f"{_short(text)}: file:// URLs are not accepted; pass the path itself")
    if scheme and len(scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise ImageError(f"{_short(text)}: URL scheme '{scheme}' is not accepted (use a path, data: or http(s):)")
    if not allow_local:
        raise ImageError(f"{_short(text)}: local file paths are not accepted here; send a data: or http(s): URL")
    return _from_path(text, base_dir, max_bytes, max_pixels)


def load_images(sources: Iterable[ImageSource] | None, *, max_images: int = MAX_IMAGES,
                **options: Any) -> list[ImageInput]:
    """Several images with ``load_image``; more than ``max_images`` is refused."""
    items = list(sources or [])
    if len(items) > max_images:
        raise ImageError(f"{len(items)} images; the limit is {max_images}")
    return [load_image(s, **options) for s in items]


def to_data_url(image: ImageInput) -> str:
    """The image as a ``data:`` URL, the form every OpenAI-compatible vision endpoint accepts."""
    return f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"


def image_part(image: ImageInput) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": to_data_url(image)}}


def to_content_parts(question: str, images: Sequence[ImageInput]) -> list[dict[str, Any]]:
    """An OpenAI-style user message content: the question's text part, then one part per image."""
    return [{"type": "text", "text": question}, *(image_part(img) for img in images)]


def split_content(content: Any, **options: Any) -> tuple[str, list[ImageInput]]:
    """Text and checked images of an OpenAI-style message content (a string or a list of parts).

    Images arriving this way come from a client, so local paths are refused unless the caller passes
    ``allow_local=True``.
    """
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ImageError(f"message content must be a string or a list of parts, got {type(content).__name__}")
    options.setdefault("allow_local", False)
    texts: list[str] = []
    sources: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise ImageError("image_url part has no 'url' string")
            sources.append(url)
        else:
            raise ImageError(f"unsupported content part type {kind!r} (use 'text' or 'image_url')")
    return "\n".join(t for t in texts if t), load_images(sources, **options)


def redact_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with every inline image replaced by a short label, for records and logs."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for p in content:
                url = p.get("image_url", {}).get("url", "") if isinstance(p, dict) and p.get("type") == "image_url" else ""
                if url.startswith("data:"):
                    digest = hashlib.sha256(url.encode("ascii", "replace")).hexdigest()[:12]
                    p = {"type": "image_url", "image_url": {"url": f"<inline image, {len(url):,} chars, sha256:{digest}>"}}
                parts.append(p)
            m = {**m, "content": parts}
        out.append(m)
    return out


def with_text(content: Any, text: str) -> Any:
    """``content`` with its text replaced by ``text``, keeping any image parts."""
    if not isinstance(content, list):
        return text
    parts = [p for p in content if not (isinstance(p, dict) and p.get("type") == "text")]
    return [{"type": "text", "text": text}, *parts]


def content_text(content: Any) -> str:
    """The text of a message content (a string, or the text parts of a part list)."""
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")
