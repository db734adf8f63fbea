"""Routers: pick a (model, tool) pair per query. See ``base`` for the interface and registry."""

from atlas_router.routers.base import (
    Decision,
    Router,
    make_router,
    register_router,
    router_class,
    router_names,
)
from atlas_router.routers.persist import load_router, read_manifest, save_router

__all__ = ["Decision", "Router", "load_router", "make_router", "read_manifest", "register_router", "router_class",
           "router_names", "save_router"]
