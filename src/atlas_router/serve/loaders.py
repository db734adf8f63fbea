"""Build the gateway's routers from saved files; the same loaders run again on reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlas_router.errors import AtlasError


def load_cluster_router(path: str) -> Any:
    """A ClusterRouter saved with its ``save`` method."""
    if not Path(path).exists():
        raise AtlasError(f"{path}: router file not found")
    try:
        from atlas_router.routers.cluster import ClusterRouter
    except ImportError as err:
        raise AtlasError(f"cannot load router {path}: the cluster router is not available ({err})") from None
    return ClusterRouter.load(path)


def router_loaders(router_file: str | None) -> dict[str, Callable[[], Any]]:
    """Loaders by gateway name for the files given on the command line."""
    loaders: dict[str, Callable[[], Any]] = {}
    if router_file:
        loaders["atlas-cluster"] = lambda: load_cluster_router(router_file)
    return loaders
