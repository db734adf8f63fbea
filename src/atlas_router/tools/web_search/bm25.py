"""Local search: BM25 (bm25s) over a JSONL document collection, indexed once per collection.

A collection is a ``.jsonl`` file, or a folder of them, with one ``{"title", "text", "url"}`` object per
line (``text`` required). ``"default"`` is the bundled encyclopedic collection.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import bm25s
import Stemmer

from atlas_router.errors import ConfigError
from atlas_router.tools.web_search.base import SearchBackend, Snippet

DEFAULT_COLLECTION = Path(__file__).resolve().parents[2] / "resources" / "docs" / "default.jsonl"

_STEMMER = Stemmer.Stemmer("english")
_CACHE: dict[tuple, "BM25Index"] = {}
_CACHE_LOCK = threading.Lock()


def collection_files(documents: str | Path) -> list[Path]:
    """The JSONL files a ``documents`` setting names; a clear error when there are none."""
    if str(documents) == "default":
        return [DEFAULT_COLLECTION]
    path = Path(documents).expanduser()
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise ConfigError(f"{path}: folder has no .jsonl document files")
        return files
    if not path.is_file():
        raise ConfigError(f"{path}: document collection not found (a .jsonl file, a folder, or 'default')")
    return [path]


def load_documents(files: list[Path]) -> list[Snippet]:
    """Read every document; a bad line is an error naming the file and the line."""
    docs: list[Snippet] = []
    for file in files:
        with file.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as err:
                    raise ConfigError(f"{file}:{number}: not a JSON object: {err}") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
                    raise ConfigError(f"{file}:{number}: each line needs a non-empty \"text\" string")
                docs.append(Snippet(title=str(obj.get("title") or ""), text=obj["text"].strip(),
                                    url=str(obj.get("url") or "")))
    if not docs:
        raise ConfigError(f"{', '.join(map(str, files))}: the document collection is empty")
    return docs


def _tokens(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False)


@dataclass
class BM25Index:
    """A built index and the documents it returns."""

    docs: list[Snippet]
    retriever: bm25s.BM25

    @classmethod
    def build(cls, docs: list[Snippet]) -> "BM25Index":
        retriever = bm25s.BM25()
        retriever.index(_tokens([f"{d.title}\n{d.text}" for d in docs]), show_progress=False)
        return cls(docs, retriever)

    def search(self, query: str, k: int) -> list[Snippet]:
        query_tokens = _tokens([query])
        if not query_tokens[0]:
            return []
        k = min(k, len(self.docs))
        ids, scores = self.retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        hits = []
        for idx, score in zip(ids[0], scores[0]):
            if score > 0:
                d = self.docs[int(idx)]
                hits.append(Snippet(d.title, d.text, d.url, float(score)))
        return hits


def get_index(documents: str | Path) -> BM25Index:
    """The index of a collection, built once per process and rebuilt when a file changes."""
    files = collection_files(documents)
    key = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    with _CACHE_LOCK:
        index = _CACHE.get(key)
        if index is None:
            index = BM25Index.build(load_documents(files))
            _CACHE[key] = index
        return index


class BM25Backend(SearchBackend):
    """Offline search over a local collection."""

    name = "bm25"

    def __init__(self, documents: str | Path = "default") -> None:
        self.documents = documents
        collection_files(documents)  # fail at pool load, not at the first question

    async def search(self, query: str, k: int) -> list[Snippet]:
        return get_index(self.documents).search(query, k)
