"""Build the gateway's routers from saved router files; the same loaders run again on reload.

A router file is data only (``atlas_router.routers.persist``: loading one runs none of its code); the
gateway loads only the files its operator names on the command line, never anything a request sends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from atlas_router.errors import AtlasError
from atlas_router.serve.registry import ROUTER_NAMES


def load_router_file(path: str | Path) -> Any:
    """A router saved with ``save_router``."""
    from atlas_router.routers.persist import load_router

    return load_router(path)


def gateway_name(router: Any) -> str:
    """The model name a router answers to: its own when it is a gateway name (atlas-cluster, atlas-rl,
    atlas-hybrid), else ``atlas`` (a baseline router served as the default)."""
    name = str(getattr(router, "name", "") or "")
    return name if name in ROUTER_NAMES else "atlas"


def load_routers(paths: Sequence[str | Path], policy_dir: str | Path | None = None,
                 ) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
    """Load every file once: (routers by gateway name, loaders by gateway name for reloads).

    With ``policy_dir`` (a trained RL policy), ``atlas-rl`` serves it, and with a cluster router too,
    ``atlas-hybrid`` combines them.
    """
    routers: dict[str, Any] = {}
    loaders: dict[str, Callable[[], Any]] = {}
    files: dict[str, str | Path] = {}
    for path in paths:
        router = load_router_file(path)
        name = gateway_name(router)
        if name in routers:
            raise AtlasError(f"{path}: a second router for '{name}'; give one router file per gateway name")
        routers[name] = router
        files[name] = path
        loaders[name] = lambda p=path: load_router_file(p)
    if policy_dir is not None:
        from atlas_router.serve.policy import HybridPathRouter, PolicyRouter

        for name in ("atlas-rl", "atlas-hybrid"):
            if name in routers:
                raise AtlasError(f"--policy serves '{name}', and a router file does too; give one of them")
        policy = PolicyRouter(policy_dir)
        routers["atlas-rl"] = policy
        loaders["atlas-rl"] = lambda: PolicyRouter(policy_dir)
        if "atlas-cluster" in routers:
            cluster_file = files["atlas-cluster"]
            routers["atlas-hybrid"] = HybridPathRouter(routers["atlas-cluster"], policy)
            loaders["atlas-hybrid"] = lambda: HybridPathRouter(load_router_file(cluster_file), PolicyRouter(policy_dir))
    return routers, loaders
