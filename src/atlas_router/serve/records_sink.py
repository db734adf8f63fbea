"""The gateway's records: one record per answered request, written off the request path.

Why a sink: a request must not wait for a Parquet part and an fsync. ``answered`` only puts a row in a
list (event-loop thread); a background task appends the list to the record store (``RecordStore``:
append-only parts, atomic) every ``flush_s`` seconds, at once when ``max_batch`` rows wait, and on
shutdown. A failed write keeps the rows for the next flush, so nothing acknowledged is dropped while
the gateway runs. Recent answers stay in memory too (bounded), so feedback on them is found before their
record reaches the disk.

Privacy (``prompts``): ``off`` stores no prompt or reply text; ``hashed`` stores an HMAC-SHA256 of the
prompt under a secret salt kept beside the store (``<dir>.salt``, mode 0600, not inside the directory
you might share), so repeated prompts can be counted without their text; ``full`` stores the prompt (the
last user message, what the router sees) and the reply. Only ``full`` records can refit a router.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import os
import secrets
from collections import OrderedDict
from pathlib import Path
from typing import Any

from atlas_router.errors import AtlasError
from atlas_router.records.feedback import FEEDBACK_SOURCE, GATEWAY_SOURCE, HASH_PREFIX, feedback_query_id
from atlas_router.records.store import RecordStore

PROMPT_MODES = ("off", "hashed", "full")
LOOKUP_COLUMNS = ["query_id", "source", "benchmark", "query", "model", "tool", "cost", "input_tokens", "output_tokens",
                  "latency_s"]
BENCHMARK = "gateway"
log = logging.getLogger("atlas.gateway")


def salt_path(directory: str | Path) -> Path:
    d = Path(directory).expanduser()
    return d.with_name(d.name + ".salt")


def load_salt(directory: str | Path) -> bytes:
    """The store's hashing salt, created once (0600) beside the store directory."""
    path = salt_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        data = path.read_text(encoding="ascii").strip()
        try:
            return bytes.fromhex(data)
        except ValueError:
            raise AtlasError(f"{path}: not a records salt file (expected hex)") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        salt = secrets.token_hex(32)
        fh.write(salt + "\n")
    return bytes.fromhex(salt)


class RecordSink:
    """Collects the gateway's answered requests and feedback and writes them to a record store."""

    def __init__(self, directory: str | Path, prompts: str = "off", flush_s: float = 5.0, max_batch: int = 512,
                 recent: int = 10_000, compact_at: int = 256) -> None:
        if prompts not in PROMPT_MODES:
            raise AtlasError(f"records prompts must be one of {', '.join(PROMPT_MODES)}, not {prompts!r}")
        self.store = RecordStore(directory)  # refuses a foreign or newer directory now, not at the first flush
        self.prompts = prompts
        self.flush_s = float(flush_s)
        self.max_batch = int(max_batch)
        self.compact_at = int(compact_at)  # parts before they are merged into one (a flush writes one part)
        self._salt = load_salt(directory) if prompts == "hashed" else b""
        self._pending: list[dict[str, Any]] = []
        self._recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._recent_max = int(recent)
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    # -- rows -------------------------------------------------------------------------------------
    def shown(self, text: str) -> str:
        """The prompt as the privacy setting lets it be stored."""
        if self.prompts == "full":
            return text
        if self.prompts == "hashed" and text:
            return HASH_PREFIX + hmac.new(self._salt, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return ""

    def answered(self, response_id: str, req: Any, answer: Any, key_id: str | None = None) -> None:
        """Queue the record of one answered chat request (event-loop thread; never blocks, never raises)."""
        try:
            question = getattr(answer, "question", "") or prompt_of(req)  # what the router saw
            cost = float(answer.cost)
            row = {"query_id": response_id, "benchmark": BENCHMARK, "query": self.shown(question),
                   "model": answer.model, "tool": answer.tool or "none",
                   "response": answer.text if self.prompts == "full" else "",
                   "score": math.nan, "cost": cost if math.isfinite(cost) else math.nan,
                   "input_tokens": int(answer.input_tokens), "output_tokens": int(answer.output_tokens),
                   "latency_s": float(answer.latency_s), "calls": 1, "error": "", "source": GATEWAY_SOURCE,
                   "grader": ""}
            self._remember(response_id, {**row, "question": question, "router": answer.router,
                                         "cluster": answer.explanation.get("cluster"), "key_id": key_id})
            self._queue(row)
        except Exception:  # a record must never fail the request it describes
            log.exception("gateway record not queued", extra={"event": "records", "request_id": response_id})

    def feedback(self, target: dict[str, Any], score: float, key_id: str | None) -> dict[str, Any]:
        """Queue the feedback record on the answer ``target`` (a row from ``lookup``); returns it."""
        row = {k: target[k] for k in ("benchmark", "query", "model", "tool", "cost", "input_tokens", "output_tokens",
                                      "latency_s")}
        row.update(query_id=feedback_query_id(target["query_id"]), score=float(score), source=FEEDBACK_SOURCE,
                   grader=f"feedback:{key_id or 'anonymous'}", calls=1, error="", response="")
        self._queue(row)
        return row

    def _remember(self, response_id: str, row: dict[str, Any]) -> None:
        self._recent[response_id] = row
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _queue(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.max_batch and self._wake is not None:
            self._wake.set()

    # -- lookup -----------------------------------------------------------------------------------
    async def lookup(self, response_id: str) -> dict[str, Any] | None:
        """The gateway record of a response: from memory when recent, else from the store (after a restart)."""
        hit = self._recent.get(response_id)
        if hit is not None:
            return hit
        if not response_id.startswith("chatcmpl-"):
            return None
        return await asyncio.to_thread(self._stored, response_id)

    def _stored(self, response_id: str) -> dict[str, Any] | None:
        import pyarrow.compute as pc

        table = self.store.to_arrow(LOOKUP_COLUMNS)
        table = table.filter(pc.and_(pc.equal(table["query_id"], response_id),
                                     pc.equal(table["source"], GATEWAY_SOURCE)))
        if table.num_rows == 0:
            return None
        row = table.slice(0, 1).to_pylist()[0]
        return {**row, "question": row["query"] if _is_text(row["query"]) else "", "router": None, "cluster": None}

    # -- writing ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background writer (in the running event loop)."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write what waits; a failure keeps the rows for the next try (and is logged)."""
        rows, self._pending = self._pending, []
        if not rows:
            return 0
        try:
            n = await asyncio.to_thread(self._write, rows)
        except Exception as err:
            self._pending = rows + self._pending
            log.warning("gateway records not written, will retry", extra={"event": "records", "error": str(err),
                                                                          "rows": len(rows)})
            return 0
        self.written += n
        return n

    def _write(self, rows: list[dict[str, Any]]) -> int:
        """Append one part; merge the parts once there are ``compact_at`` (reads stay fast for a long-lived gateway)."""
        n = self.store.append(rows)
        if len(self.store.parts()) >= self.compact_at:
            self.store.compact()
        return n

    async def aclose(self) -> None:
        """Stop the writer and write everything left."""
        if self._task is not None and self._wake is not None:
            self._closing = True
            self._wake.set()
            await self._task  # its last flush finishes (a write in a thread cannot be cancelled half-way)
            self._task = None
        await self.flush()


def prompt_of(req: Any) -> str:
    """What the router saw of a chat request: its last user message ("" when it has none)."""
    from atlas_router.serve.request import GatewayError, question_of

    try:
        return question_of([m.model_dump(exclude_none=True) for m in req.messages])
    except GatewayError:
        return ""


def _is_text(query: str) -> bool:
    return bool(query) and not query.startswith(HASH_PREFIX)
