"""uvicorn's httptools protocol, with each response's status line and headers sent together with its body.

Why: uvicorn writes a response's head when the app sends ``http.response.start`` and its body when the app
sends ``http.response.body``: two writes, so two system calls and two TCP segments for every reply, and on
loopback the client's process is woken for each. The ASGI specification lets a server hold the head until
the first body message. Here the head waits for the next write on the same connection, which for a whole
reply follows in the same step of the event loop; a streamed reply's head goes out at the latest on the
next step, so nothing waits for a slow first chunk.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "  # how uvicorn's status line starts


class _HeadWithBody:
    """The connection's transport, holding a response head until the next write or the next loop step.

    Writes keep their order; anything else is the real transport's (``close`` sends what is held first)."""

    __slots__ = ("_transport", "_held", "_loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif data[:9] == _HEAD:  # a head: its body follows in this step (else the next step sends it alone)
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Send what is held, if anything (dropped when the connection is already going: the client left)."""
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadWithBodyProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` on a transport that sends a whole reply in one write (module docs)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeadWithBody(transport))  # type: ignore[arg-type]
