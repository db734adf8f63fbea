"""Routers: pick a (model, tool) pair per query. See ``base`` for the interface and registry."""

from atlas_router.routers.base import (
    Decision,
    Router,
    load_router,
    make_router,
    read_manifest,
    register_router,
    router_class,
    router_names,
)

__all__ = ["Decision", "Router", "load_router", "make_router", "read_manifest", "register_router", "router_class",
           "router_names"]
