"""The search backend interface shared by every web_search backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Snippet:
    """One search hit: a short passage with where it came from and how well it matched."""

    title: str
    text: str
    url: str = ""
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SearchError(Exception):
    """A backend that could not answer (HTTP failure, bad reply, missing key); the message is one line."""


class SearchBackend(ABC):
    """``search(query, k)`` returns at most ``k`` snippets, best first."""

    name: str = "backend"

    @abstractmethod
    async def search(self, query: str, k: int) -> list[Snippet]:
        """The top ``k`` snippets for ``query``; raises SearchError when the backend fails."""

    async def aclose(self) -> None:
        """Release connections; a no-op for local backends."""
