"""Helpers for gateway tests: a pool of loopback upstream models, and a gateway served on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import openai

from atlas_router.cli.serve import http_protocol
from atlas_router.config import parse_pool_config
from atlas_router.pool.pool import Pool
from atlas_router.serve.auth import KeyRing
from atlas_router.serve.gateway import create_gateway_app
from atlas_router.serve.settings import GatewaySettings
from support.servers import running_server

NONE_TOOL = {"name": "none", "kind": "none"}


def pool_config(url: str, names: list[str], tools: list[dict] | None = None, timeout_s: float = 5.0,
                retries: int = 0, prices: dict[str, float] | None = None) -> dict[str, Any]:
    """A pool config dict whose models all live on the upstream at ``url`` (retries off by default, so
    failures reach the gateway and its fallback is what is tested)."""
    return {
        "models": [
            {"name": n, "backend": "openai", "endpoint": f"{url}/v1", "timeout_s": timeout_s, "max_retries": retries,
             "price": {"input": (prices or {}).get(n, 1.0), "output": (prices or {}).get(n, 1.0) * 2},
             "sampling": {"max_tokens": 32}}
            for n in names
        ],
        "tools": tools or [NONE_TOOL],
        "cache": {"enabled": False},
    }


def http_pool(url: str, names: list[str], **kw: Any) -> Pool:
    return Pool(parse_pool_config(pool_config(url, names, **kw)))


@contextlib.contextmanager
def gateway(pool: Pool | None = None, keys: KeyRing | None = None, **kw: Any) -> Iterator[str]:
    """Serve a gateway for ``pool`` on loopback, on the HTTP protocol ``atlas serve`` uses; yields its base
    URL. ``kw`` goes to GatewaySettings (names it has) or create_gateway_app (the rest)."""
    fields = GatewaySettings.model_fields
    settings = GatewaySettings(**{k: v for k, v in kw.items() if k in fields})
    app_kw = {k: v for k, v in kw.items() if k not in fields}
    app = create_gateway_app(pool, settings=settings, keys=keys if keys is not None else KeyRing(), **app_kw)
    with running_server(app, http=http_protocol()) as url:
        yield url


def client(url: str, key: str = "unused") -> openai.OpenAI:
    """The official client, with its own retries off so every success is the gateway's doing."""
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)

