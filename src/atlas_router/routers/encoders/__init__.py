"""Query encoders: one interface, backends chosen by a spec string (see ``factory``)."""

from atlas_router.routers.encoders.base import Encoder, l2_normalise
from atlas_router.routers.encoders.cache import EmbeddingCache
from atlas_router.routers.encoders.factory import DEFAULT_SPEC, build_encoder

__all__ = ["DEFAULT_SPEC", "EmbeddingCache", "Encoder", "build_encoder", "l2_normalise"]
