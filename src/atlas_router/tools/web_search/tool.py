"""The web_search tool: the model writes a query, a backend returns the top passages."""

from __future__ import annotations

import re
from typing import Any

from atlas_router.errors import ConfigError
from atlas_router.tools.base import Tool, ToolContext, ToolResult
from atlas_router.tools.settings_check import reject_unknown
from atlas_router.tools.web_search.base import SearchBackend, SearchError, Snippet
from atlas_router.tools.web_search.reading import best_sentences, format_sentences

BACKENDS = ("bm25", "google", "searxng")
_TAG = re.compile(r"<search>\s*(.+?)\s*</search>", re.DOTALL | re.IGNORECASE)
_CALL = re.compile(r"\bsearch\(\s*(?:query\s*=\s*)?(\"(?:[^\"\\]|\\.)+\"|'(?:[^'\\]|\\.)+')\s*\)", re.IGNORECASE)
_LINE = re.compile(r"^\s*(?:\*\*)?search(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
MAX_QUERY_CHARS = 300
_SETTINGS = ("backend", "top_k", "max_chars", "timeout_s", "documents", "cx", "api_key_env", "endpoint", "categories",
             "language", "read", "sentences")
READ_MODES = ("sentences", "passages")


def extract_query(text: str) -> str | None:
    """The first query in ``<search>q</search>``, ``search("q")`` or a ``Search: q`` line."""
    found = []
    for pattern in (_TAG, _CALL, _LINE):
        m = pattern.search(text)
        if m:
            found.append((m.start(), m.group(1)))
    if not found:
        return None
    query = min(found)[1].strip()
    if query[:1] in "\"'" and query[-1:] == query[:1] and len(query) >= 2:
        query = query[1:-1]
    query = " ".join(query.split())
    return query or None


def make_backend(settings: dict[str, Any]) -> SearchBackend:
    """The backend ``settings["backend"]`` names, configured from the same settings."""
    name = settings.get("backend", "bm25")
    timeout_s = float(settings.get("timeout_s", 10.0))
    if name == "bm25":
        from atlas_router.tools.web_search.bm25 import BM25Backend

        return BM25Backend(settings.get("documents", "default"))
    if name == "google":
        from atlas_router.tools.web_search.http_backends import GOOGLE_ENDPOINT, GoogleBackend

        return GoogleBackend(cx=str(settings.get("cx", "")), api_key_env=settings.get("api_key_env", "GOOGLE_API_KEY"),
                             endpoint=settings.get("endpoint", GOOGLE_ENDPOINT), timeout_s=timeout_s)
    if name == "searxng":
        from atlas_router.tools.web_search.http_backends import SearxngBackend

        return SearxngBackend(endpoint=str(settings.get("endpoint", "")), timeout_s=timeout_s,
                              categories=settings.get("categories"), language=settings.get("language"))
    raise ValueError(f"unknown search backend '{name}'; use one of: {', '.join(BACKENDS)}")


def format_snippets(snippets: list[Snippet], max_chars: int) -> str:
    """Numbered passages, each cut to ``max_chars``, the way the model reads them."""
    blocks = []
    for i, s in enumerate(snippets, 1):
        text = s.text if len(s.text) <= max_chars else s.text[: max_chars].rsplit(" ", 1)[0] + " ..."
        head = f"[{i}] {s.title}" if s.title else f"[{i}]"
        blocks.append(f"{head}\n{text}" + (f"\n({s.url})" if s.url else ""))
    return "\n\n".join(blocks)


class WebSearchTool(Tool):
    """Search (settings: backend bm25|google|searxng, top_k default 3, max_chars default 600, read
    sentences|passages (default sentences: the ``sentences``, default 1, of the top passages that best match
    the query; passages: whole passages), plus the backend's own: documents; cx, api_key_env, endpoint;
    endpoint, categories, language)."""

    kind = "web_search"
    mode = "loop"
    call_openers = ("<search", "search")
    sample_input = "capital of Australia"

    def __init__(self, spec) -> None:
        super().__init__(spec)
        reject_unknown(self.settings, _SETTINGS)
        self.top_k = int(self.settings.get("top_k", 3))
        self.max_chars = int(self.settings.get("max_chars", 600))
        self.read = str(self.settings.get("read", "sentences"))
        self.n_sentences = int(self.settings.get("sentences", 1))
        if self.top_k < 1 or self.max_chars < 20:
            raise ValueError("top_k must be at least 1 and max_chars at least 20")
        if self.read not in READ_MODES or self.n_sentences < 1:
            raise ValueError(f"read must be one of {', '.join(READ_MODES)} and sentences at least 1")
        try:
            self.backend = make_backend(self.settings)
        except ConfigError as err:
            raise ConfigError(f"tool '{self.name}': {err}") from None

    def usage(self) -> str:
        if self.prefetch:
            return ("Search results for the question come before it. Read them and answer from them with a short "
                    "answer (a name, a place, a year or a number).")
        return (
            "You can search for facts. To search, write one query between tags, like:\n"
            "<search>capital of Australia</search>\n"
            "You will get the best matching passages back; read them, then answer."
        )

    def demonstration(self) -> list[dict[str, str]]:
        """One worked retrieve-then-read exchange in the exact shape the real question will have."""
        question = "What is the capital of Peru?"
        found = "Peru: Its capital and largest city is Lima."
        observed = self.format_observation(ToolResult(ok=True, output=found))
        if self.prefetch:
            return [{"role": "user", "content": f"{observed}\n\nQuestion: {question}"},
                    {"role": "assistant", "content": "Final answer: Lima"}]
        return self.worked_example(question, "<search>capital of Peru</search>", found, "Lima")

    def extract_call(self, text: str) -> str | None:
        return extract_query(text)

    async def _run(self, tool_input: str, context: ToolContext) -> ToolResult:
        query = " ".join(tool_input.split())
        if not query:
            return ToolResult(ok=False, output="", error="empty search query")
        if len(query) > MAX_QUERY_CHARS:
            query = query[:MAX_QUERY_CHARS]
        try:
            snippets = await self.backend.search(query, self.top_k)
        except SearchError as err:
            return ToolResult(ok=False, output="", error=str(err))
        data = {"backend": self.backend.name, "query": query, "snippets": [s.to_dict() for s in snippets]}
        if not snippets:
            return ToolResult(ok=True, output=f"No results for: {query}", data=data)
        if self.read == "sentences":
            return ToolResult(ok=True, output=format_sentences(best_sentences(query, snippets, self.n_sentences)),
                              data=data)
        return ToolResult(ok=True, output=format_snippets(snippets, self.max_chars), data=data)
