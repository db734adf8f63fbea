"""The routing protocol the RL policy speaks: a pool-generated system prompt, tags, and a strict parser.

Why generated from the live pool: the policy reads the pool (names and descriptions) at every query, so
models and tools can be added at inference time without retraining. Why strict: a route is an action with
a cost, so ``model@@tool: input`` is split on the first ``@@`` and the first ``:`` and the names must
resolve to exactly one pool entry; case, spaces, ``-`` and ``_`` are forgiven, ambiguity never is.

Tags: ``<think>…</think>`` (reasoning), ``<search> model@@tool: input </search>`` (a route),
``<information>…</information>`` (written by the environment only), ``<answer>…</answer>`` (final).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from atlas_router.config import PoolConfig
from atlas_router.errors import AtlasError

TAGS = ("think", "search", "information", "answer")
POLICY_TAGS = ("think", "search", "answer")
ROUTE_SEP = "@@"
SEARCH_END = "</search>"
ANSWER_END = "</answer>"
STOP_STRINGS = (SEARCH_END, ANSWER_END)

_ANY_TAG = re.compile(r"<\s*(/?)\s*(think|search|information|answer)\s*>", re.IGNORECASE)
_NAME_NOISE = re.compile(r"[\s\-_]+")


class RouteError(AtlasError):
    """A ``<search>`` body that is not a valid ``model@@tool: input`` call on this pool."""


@dataclass(frozen=True)
class Entry:
    """A pool member as the policy sees it."""

    name: str
    description: str = ""


@dataclass(frozen=True)
class Route:
    """One parsed routing call, names resolved to their exact pool spelling."""

    model: str
    tool: str
    input: str

    def __str__(self) -> str:
        return f"{self.model}{ROUTE_SEP}{self.tool}: {self.input}"


def normalize_name(name: str) -> str:
    """The tolerant form of a name: case-folded, without spaces, dashes or underscores."""
    return _NAME_NOISE.sub("", name).casefold()


@dataclass(frozen=True)
class PoolView:
    """The names and descriptions of a pool: all the protocol needs (no backends are built)."""

    models: tuple[Entry, ...]
    tools: tuple[Entry, ...]

    @classmethod
    def from_config(cls, config: PoolConfig) -> "PoolView":
        return cls(
            models=tuple(Entry(m.name, m.description) for m in config.models),
            tools=tuple(Entry(t.name, t.description) for t in config.tools),
        )

    def resolve_model(self, name: str) -> str:
        return _resolve(name, [m.name for m in self.models], "model")

    def resolve_tool(self, name: str) -> str:
        return _resolve(name, [t.name for t in self.tools], "tool")

    def pairs(self) -> list[tuple[str, str]]:
        return [(m.name, t.name) for m in self.models for t in self.tools]


def _resolve(name: str, names: list[str], kind: str) -> str:
    raw = name.strip()
    if not raw:
        raise RouteError(f"empty {kind} name")
    if raw in names:
        return raw
    key = normalize_name(raw)
    hits = [n for n in names if normalize_name(n) == key]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise RouteError(f"{kind} name '{raw}' is ambiguous: it matches {', '.join(hits)}")
    raise RouteError(f"unknown {kind} '{raw}'; the pool has: {', '.join(names)}")


def parse_route(body: str, pool: PoolView) -> Route:
    """Parse a ``<search>`` body: split on the first ``@@``, then on the first ``:``; resolve names."""
    if ROUTE_SEP not in body:
        raise RouteError(f"a route must look like 'model{ROUTE_SEP}tool: input' (no '{ROUTE_SEP}' found)")
    model_part, rest = body.split(ROUTE_SEP, 1)
    if ":" not in rest:
        raise RouteError(f"a route must look like 'model{ROUTE_SEP}tool: input' (no ':' after the tool)")
    tool_part, query = rest.split(":", 1)
    query = query.strip()
    if not query:
        raise RouteError("a route needs a non-empty input after ':'")
    return Route(pool.resolve_model(model_part), pool.resolve_tool(tool_part), query)


def neutralize(text: str) -> str:
    """Make protocol tags inert in text the policy did not write (tool output, model replies).

    ``<answer>`` becomes ``[answer]`` and so on, repeated until no tag is left, so nothing inside an
    observation can close the information block, open an answer, or start a route.
    """
    while True:
        new = _ANY_TAG.sub(lambda m: f"[{m.group(1)}{m.group(2).lower()}]", text)
        if new == text:
            return new
        text = new


def information_block(body: str) -> str:
    """The observation appended after a route: neutralised body inside one information block."""
    return f"\n<information>{neutralize(body)}</information>\n"


def system_prompt(pool: PoolView, max_routes: int = 4) -> str:
    """The policy's instructions, listing the live pool so new members need no retraining."""
    models = "\n".join(f"- {m.name}: {m.description}".rstrip(": ") for m in pool.models)
    tools = "\n".join(f"- {t.name}: {t.description}".rstrip(": ") for t in pool.tools)
    return (
        "You answer questions by routing them to a model and a tool from the pool below.\n"
        "Think inside <think> </think>. To call a model with a tool, write "
        f"<search> model{ROUTE_SEP}tool: input </search>; the result comes back inside "
        f"<information> </information>. You may route at most {max_routes} times. "
        "End with the final answer inside <answer> </answer>.\n"
        f"Models:\n{models}\nTools:\n{tools}"
    )


@dataclass(frozen=True)
class Block:
    """A tagged block found in policy text; ``closed`` is False when the text ended inside it."""

    tag: str
    body: str
    closed: bool


@dataclass
class Scan:
    """Policy text cut into blocks, with every deviation from the grammar listed in ``problems``."""

    blocks: list[Block]
    problems: list[str]


def scan_policy_text(text: str) -> Scan:
    """Cut text the policy wrote into think/search/answer blocks; anything else is a problem.

    Grammar: blocks never nest, every opened block is closed, ``<information>`` never appears (only the
    environment writes it), and only whitespace sits between blocks.
    """
    blocks: list[Block] = []
    problems: list[str] = []
    pos = 0
    open_tag: str | None = None
    open_at = 0
    for m in _ANY_TAG.finditer(text):
        closing, tag = m.group(1) == "/", m.group(2).lower()
        if tag == "information":
            problems.append("the policy wrote an <information> tag (only the environment may)")
            continue
        if open_tag is None:
            if closing:
                problems.append(f"</{tag}> without an opening tag")
                continue
            if text[pos : m.start()].strip():
                problems.append(f"text outside any tag: {text[pos:m.start()].strip()[:40]!r}")
            open_tag, open_at = tag, m.end()
        elif closing and tag == open_tag:
            blocks.append(Block(tag, text[open_at : m.start()].strip(), True))
            open_tag, pos = None, m.end()
        else:
            problems.append(f"<{'/' if closing else ''}{tag}> inside an open <{open_tag}> block")
    if open_tag is not None:
        blocks.append(Block(open_tag, text[open_at:].strip(), False))
        problems.append(f"<{open_tag}> is never closed")
    elif text[pos:].strip():
        problems.append(f"text outside any tag: {text[pos:].strip()[:40]!r}")
    return Scan(blocks, problems)
