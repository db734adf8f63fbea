"""The web_search tool and its backends (local BM25, Google Custom Search, SearXNG)."""

from atlas_router.tools.web_search.base import SearchBackend, SearchError, Snippet
from atlas_router.tools.web_search.tool import WebSearchTool, extract_query, make_backend

__all__ = ["SearchBackend", "SearchError", "Snippet", "WebSearchTool", "extract_query", "make_backend"]
