"""Hosted search backends over HTTP: Google Custom Search JSON API and a SearXNG instance."""

from __future__ import annotations

from typing import Any

import httpx

from atlas_router.config import secret
from atlas_router.core.http import async_client, send_with_retries
from atlas_router.tools.web_search.base import SearchBackend, SearchError, Snippet

GOOGLE_ENDPOINT = "https://www.googleapis.com/customsearch/v1"


class _HTTPBackend(SearchBackend):
    def __init__(self, endpoint: str, timeout_s: float) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    async def _get_json(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        # A client per call: searches are rare, and a pooled client would be bound to one event loop.
        try:
            async with async_client(self.timeout_s) as client:
                response = await send_with_retries(lambda: client.get(url, params=params))
        except httpx.HTTPError as err:
            raise SearchError(f"{self.name} search failed: {type(err).__name__}: {err}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            detail = ""
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                detail = f": {body['error'].get('message', '')}"
            raise SearchError(f"{self.name} search failed: HTTP {response.status_code}{detail}")
        if not isinstance(body, dict):
            raise SearchError(f"{self.name} search returned a reply that is not a JSON object")
        return body


class GoogleBackend(_HTTPBackend):
    """Google Custom Search JSON API: ``key`` from the environment variable ``api_key_env``, engine ``cx``."""

    name = "google"

    def __init__(self, cx: str, api_key_env: str = "GOOGLE_API_KEY", endpoint: str = GOOGLE_ENDPOINT,
                 timeout_s: float = 10.0) -> None:
        if not cx:
            raise ValueError("backend 'google' needs 'cx' (the programmable search engine id)")
        super().__init__(endpoint, timeout_s)
        self.cx, self.api_key_env = cx, api_key_env

    async def search(self, query: str, k: int) -> list[Snippet]:
        key = secret(self.api_key_env)
        if not key:
            raise SearchError(f"environment variable {self.api_key_env} (api_key_env) is not set")
        body = await self._get_json(self.endpoint, {"key": key, "cx": self.cx, "q": query, "num": min(max(k, 1), 10)})
        items = body.get("items") or []
        return [Snippet(title=str(it.get("title", "")), text=str(it.get("snippet", "")).strip(),
                        url=str(it.get("link", "")), score=1.0 / (rank + 1))
                for rank, it in enumerate(items[:k]) if isinstance(it, dict)]


class SearxngBackend(_HTTPBackend):
    """A SearXNG instance's JSON API (``/search?format=json``, which the instance must enable)."""

    name = "searxng"

    def __init__(self, endpoint: str, timeout_s: float = 10.0, categories: str | None = None,
                 language: str | None = None) -> None:
        if not endpoint:
            raise ValueError("backend 'searxng' needs 'endpoint' (for example http://127.0.0.1:8888)")
        super().__init__(endpoint.rstrip("/"), timeout_s)
        self.extra = {k: v for k, v in (("categories", categories), ("language", language)) if v}

    async def search(self, query: str, k: int) -> list[Snippet]:
        body = await self._get_json(f"{self.endpoint}/search", {"q": query, "format": "json", **self.extra})
        results = [r for r in body.get("results") or [] if isinstance(r, dict)]
        return [Snippet(title=str(r.get("title", "")), text=str(r.get("content", "")).strip(),
                        url=str(r.get("url", "")), score=float(r.get("score") or 0.0))
                for r in results[:k]]
