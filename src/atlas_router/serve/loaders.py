"""Build the gateway's routers from saved router files; the same loaders run again on reload.

A router file is a joblib pickle (``atlas_router.routers.base``): the gateway loads only the files its
operator names on the command line, never anything a request sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from atlas_router.errors import AtlasError
from atlas_router.serve.registry import ROUTER_NAMES


def load_router_file(path: str | Path) -> Any:
    """A router saved with ``Router.save``."""
    from atlas_router.routers.base import load_router

    return load_router(path)


def gateway_name(router: Any) -> str:
    """The model name a router answers to: its own when it is a gateway name (atlas-cluster, atlas-rl,
    atlas-hybrid), else ``atlas`` (a baseline router served as the default)."""
    name = str(getattr(router, "name", "") or "")
    return name if name in ROUTER_NAMES else "atlas"


def load_routers(paths: Sequence[str | Path]) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    """Load every file once: (routers by gateway name, loaders by gateway name for reloads)."""
    routers: dict[str, Any] = {}
    loaders: dict[str, Callable[[], Any]] = {}
    for path in paths:
        router = load_router_file(path)
        name = gateway_name(router)
        if name in routers:
            raise AtlasError(f"{path}: a second router for '{name}'; give one router file per gateway name")
        routers[name] = router
        loaders[name] = lambda p=path: load_router_file(p)
    return routers, loaders
