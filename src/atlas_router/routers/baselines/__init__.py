"""Baseline routers on the same records and interface as the cluster router (see ``routers.base``)."""
