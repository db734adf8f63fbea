"""Image inputs: what passes (the five accepted formats, as files, data URLs, bytes and loopback http) and
what is refused with one clear line (other formats, SVG/HTML with scripts, decompression bombs, truncated
and corrupt files, mislabelled files, oversize bytes, paths out of their directory, file:// and other
schemes, remote hosts without permission, slow, huge or redirecting http answers)."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import zlib

import pytest
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from atlas_router.errors import AtlasError
from atlas_router.core.images import (
    ImageError,
    ImageInput,
    MAX_IMAGE_BYTES,
    load_image,
    load_images,
    redact_images,
    split_content,
    to_content_parts,
    to_data_url,
)
from support.scenes import counting_scene, png_bytes
from support.servers import running_server

SCENE = counting_scene(3).image
PNG = png_bytes(SCENE)
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.cookie)</script></svg>'


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with a tiny (wrong) body: a bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"),
                                      ("GIF", "image/gif"), ("BMP", "image/bmp")])
def test_accepted_formats_round_trip(fmt, mime, tmp_path):
    data = png_bytes(SCENE.convert("RGB"), fmt)
    ext = {"JPEG": "jpg", "WEBP": "webp"}.get(fmt, fmt.lower())
    path = tmp_path / f"scene.{ext}"
    path.write_bytes(data)
    img = load_image(path)
    assert (img.mime, img.width, img.height, img.data) == (mime, 480, 360, data)
    url = to_data_url(img)
    assert url.startswith(f"data:{mime};base64,")
    again = load_image(url)
    assert again.data == data and again.sha256 == img.sha256
    assert load_image(data).mime == mime


def test_content_parts_and_redaction():
    img = load_image(PNG)
    parts = to_content_parts("How many?", [img, img])
    assert parts[0] == {"type": "text", "text": "How many?"}
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url"]
    assert parts[1]["image_url"]["url"] == to_data_url(img)
    text, images = split_content(parts)
    assert text == "How many?" and [i.sha256 for i in images] == [img.sha256] * 2
    redacted = redact_images([{"role": "user", "content": parts}])[0]["content"]
    assert redacted[0] == parts[0] and "sha256:" in redacted[1]["image_url"]["url"]
    assert len(str(redacted)) < 400


def refused(source, match: str, **kw) -> str:
    with pytest.raises(ImageError, match=match) as info:
        load_image(source, **kw)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, AtlasError)
    return message


def test_hostile_and_broken_content_is_refused(tmp_path):
    refused(SVG, "SVG/XML/HTML content is not accepted")
    refused(b"<html><script>alert(1)</script></html>", "SVG/XML/HTML")
    refused("data:image/svg+xml;base64," + base64.b64encode(SVG).decode(), "SVG is not accepted")
    refused("data:text/html;base64,PHNjcmlwdD4=", "not an image")
    refused("data:image/png;base64,@@@not-base64@@@", "not valid base64")
    refused("data:image/png," + "x" * 10, "base64-encoded")
    refused(b"just some text, not an image", "not an image in an accepted format")
    refused(b"", "empty image")
    tiff = png_bytes(SCENE, "TIFF")
    refused(tiff, "not an image in an accepted format")  # a real image, but not one of the five formats
    refused(PNG[: len(PNG) // 2], "corrupt or truncated")
    jpeg = png_bytes(SCENE.convert("RGB"), "JPEG")
    refused(jpeg[: len(jpeg) // 2], "corrupt or truncated")
    corrupt = bytearray(PNG)
    corrupt[60:90] = b"\xff" * 30
    refused(bytes(corrupt), "corrupt or truncated")


def test_decompression_bombs_are_refused_from_the_header():
    refused(png_header_only(8000, 6000), "48,000,000 pixels; the limit is 40,000,000")
    refused(png_header_only(60000, 60000), "decompression bomb")  # past Pillow's own bomb limit
    refused(png_header_only(2000, 2000), "pixels; the limit is 1,000,000", max_pixels=1_000_000)


def test_files_paths_and_schemes(tmp_path):
    (tmp_path / "photo.png").write_bytes(png_bytes(SCENE.convert("RGB"), "JPEG"))
    refused(tmp_path / "photo.png", "content is JPEG but the name says PNG")
    (tmp_path / "notes.txt").write_bytes(PNG)
    refused(tmp_path / "notes.txt", "'.txt' is not an image file extension")
    (tmp_path / "chart.svg").write_bytes(SVG)
    refused(tmp_path / "chart.svg", "not an image file extension")
    refused("/etc/passwd", "not an image in an accepted format")
    refused("/dev/zero", "not a regular file")
    refused(tmp_path / "missing.png", "not found")
    refused(tmp_path, "not a regular file")
    refused("file:///etc/passwd", "file:// URLs are not accepted")
    refused("ftp://example.com/x.png", "scheme 'ftp' is not accepted")
    refused("javascript:alert(1)", "scheme 'javascript' is not accepted")
    refused(str(tmp_path / "photo.png") + "\x00.png", "NUL byte")
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(MAX_IMAGE_BYTES + 1)
    refused(big, "the limit is 10,485,760")
    refused(PNG, "the limit is 100", max_bytes=100)
    refused("data:image/png;base64," + base64.b64encode(PNG).decode(), "the limit is 100", max_bytes=100)


def test_paths_stay_inside_their_directory(tmp_path):
    base = tmp_path / "data"
    (base / "img").mkdir(parents=True)
    (base / "img" / "ok.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    os.symlink(tmp_path / "secret.png", base / "img" / "link.png")
    assert load_image("img/ok.png", base_dir=base).width == 480
    refused("../secret.png", "leaves its directory", base_dir=base)
    refused("img/../../secret.png", "leaves its directory", base_dir=base)
    refused(str(tmp_path / "secret.png"), "leaves its directory", base_dir=base)
    refused("img/link.png", "leaves its directory", base_dir=base)  # a symlink pointing out
    refused("/etc/passwd", "leaves its directory", base_dir=base)


def test_client_content_never_opens_local_files(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    with pytest.raises(ImageError, match="local file paths are not accepted"):
        split_content([{"type": "image_url", "image_url": {"url": str(tmp_path / "a.png")}}])
    with pytest.raises(ImageError, match="file:// URLs"):
        split_content([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}])
    with pytest.raises(ImageError, match="unsupported content part"):
        split_content([{"type": "input_audio", "input_audio": {}}])
    with pytest.raises(ImageError, match="the limit is 8"):
        load_images([PNG] * 9)


# -- http(s) -------------------------------------------------------------------------------------------

def image_server() -> FastAPI:
    app = FastAPI()

    @app.get("/ok.png")
    async def ok() -> Response:
        return Response(PNG, media_type="image/png")

    @app.get("/huge.png")
    async def huge() -> StreamingResponse:
        async def body():
            for _ in range(64):  # 64 MiB if nobody stops reading
                yield b"\0" * (1 << 20)
        return StreamingResponse(body(), media_type="image/png")

    @app.get("/slow.png")
    async def slow() -> Response:
        await asyncio.sleep(2)
        return Response(PNG, media_type="image/png")

    @app.get("/moved.png")
    async def moved() -> RedirectResponse:
        return RedirectResponse("/ok.png")

    @app.get("/script.png")
    async def script() -> Response:
        return Response(SVG, media_type="image/png")

    return app


@pytest.fixture(scope="module")
def server():
    with running_server(image_server()) as url:
        yield url


def test_http_images_from_loopback(server):
    img = load_image(f"{server}/ok.png")
    assert img.data == PNG and img.source.endswith("/ok.png")
    refused(f"{server}/missing.png", "HTTP 404")
    refused(f"{server}/moved.png", "redirects are not followed")
    refused(f"{server}/script.png", "SVG/XML/HTML")
    refused(f"{server}/huge.png", "more than 10,485,760 bytes")  # no length announced: stopped while reading
    refused(f"{server}/slow.png", "no complete answer within 0.5s", timeout_s=0.5)


def test_remote_hosts_need_permission(monkeypatch):
    monkeypatch.delenv("ATLAS_ALLOW_REMOTE_IMAGES", raising=False)
    for url in ("http://192.0.2.7/cat.png", "https://example.com/cat.png", "http://169.254.169.254/latest/meta-data"):
        refused(url, "is not allowed")
    # with permission the host check passes and the fetch itself is tried (TEST-NET: nothing answers)
    message = refused("http://192.0.2.7/cat.png", "fetch failed|no complete answer", allow_remote=True, timeout_s=0.3)
    assert "not allowed" not in message
    monkeypatch.setenv("ATLAS_ALLOW_REMOTE_IMAGES", "1")
    assert "not allowed" not in refused("http://192.0.2.7/cat.png", "fetch failed|no complete answer", timeout_s=0.3)


def test_image_input_passes_through_and_pil_images_are_encoded():
    img = load_image(PNG)
    assert load_image(img) is img and isinstance(img, ImageInput)
    from_pil = load_image(SCENE)
    assert from_pil.mime == "image/png" and (from_pil.width, from_pil.height) == (480, 360)
    assert load_image({"bytes": PNG, "path": "x.png"}).data == PNG
