"""``atlas serve``'s HTTP protocol (serve/http_protocol.py) on a real uvicorn server on loopback, read with raw
sockets: a whole reply's head and body leave in one write, a streamed reply's head does not wait for its first
chunk, and keep-alive, several replies on one connection and a closing reply still work. How many writes
reach the socket cannot be seen from the client (loopback may deliver two writes in one read), so that is
checked on a transport that records its writes."""

from __future__ import annotations

import asyncio
import socket
import threading
from urllib.parse import urlsplit

from atlas_router.cli.serve import _uvicorn_options, http_protocol
from atlas_router.serve.http_protocol import HeadWithBodyProtocol, _HeadWithBody
from support.servers import running_server

BODY = b'{"answer": "' + b"x" * 2000 + b'"}'


def make_app(release: threading.Event):
    """``/whole``: one JSON reply; ``/stream``: the head, then a chunk only once the test says it saw the head."""

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            while not release.is_set():  # the test releases the body once the head reached it
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"late chunk", "more_body": False})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})

    return app


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def read_reply(sock: socket.socket) -> bytes:
    """One Content-Length reply, whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_atlas_serve_and_the_gateway_tests_use_the_one_write_protocol_when_httptools_is_installed():
    assert _uvicorn_options({"host": "127.0.0.1", "port": 0, "log_level": "warning"}, 5)["http"] is HeadWithBodyProtocol
    assert http_protocol() is HeadWithBodyProtocol


def test_a_whole_reply_arrives_in_one_segment_and_keep_alive_holds():
    release = threading.Event()
    with running_server(make_app(release), http=HeadWithBodyProtocol) as url:
        with socket.create_connection(address(url), timeout=5) as sock:
            for _ in range(3):  # three replies on one kept-alive connection
                sock.sendall(b"GET /whole HTTP/1.1\r\nHost: t\r\n\r\n")
                first = sock.recv(65536)  # one write on loopback: head and body in the first read
                assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(BODY), first[:200]
            sock.sendall(b"GET /whole HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            reply = read_reply(sock)
            assert reply.endswith(BODY) and b"connection: close" in reply.lower()
            assert sock.recv(65536) == b""  # the server closed after sending everything it held


def test_a_streamed_reply_sends_its_head_before_its_first_chunk():
    release = threading.Event()
    with running_server(make_app(release), http=HeadWithBodyProtocol) as url:
        with socket.create_connection(address(url), timeout=5) as sock:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:  # the body is held back by the app until this arrives: no deadlock
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ") and b"late chunk" not in head
            release.set()
            rest = head.partition(b"\r\n\r\n")[2]
            while b"late chunk" not in rest:
                rest += sock.recv(65536)


class RecordingTransport:
    """Stands in for the socket's transport, whose write calls a client cannot count."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed


async def test_head_and_body_reach_the_transport_in_one_write_and_nothing_is_held_for_long():
    rec = RecordingTransport()
    transport = _HeadWithBody(rec)  # type: ignore[arg-type]
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
    transport.write(head)
    assert rec.writes == [] and transport.get_write_buffer_size() == len(head)
    transport.write(b"body")
    assert rec.writes == [head + b"body"]
    transport.write(b"HTTP/1.1 is how this body starts")  # held like a head, sent on the next loop step
    await asyncio.sleep(0)
    assert rec.writes[-1] == b"HTTP/1.1 is how this body starts"
    transport.write(head)
    transport.close()  # what is held goes out before the close
    assert rec.writes[-1] == head and rec.closed and len(rec.writes) == 3
    transport.write(head)  # the client left with a head held: it is dropped, not written to a closed socket
    await asyncio.sleep(0)
    assert len(rec.writes) == 3
