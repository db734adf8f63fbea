"""Prometheus metrics of one gateway, in its own registry (so several gateways can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """Everything an operator needs to see: load, latency, routes, cost, errors and upstream health."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("atlas_requests", "Chat-completion requests by requested model kind and status.",
                                ["kind", "status"], registry=r)
        self.latency = Histogram("atlas_request_latency_seconds", "Request latency in the gateway.", ["kind"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.routes = Counter("atlas_routes", "Requests answered by each (model, tool) pair.",
                              ["router", "model", "tool"], registry=r)
        self.cost = Counter("atlas_cost", "Cost of answered requests (price units).", ["model", "tool"], registry=r)
        self.tokens = Counter("atlas_tokens", "Tokens of answered requests.", ["model", "direction"], registry=r)
        self.errors = Counter("atlas_errors", "Requests refused or failed, by cause.", ["kind"], registry=r)
        self.upstream_failures = Counter("atlas_upstream_failures", "Failed pair attempts by upstream model.",
                                         ["model"], registry=r)
        self.fallbacks = Counter("atlas_fallbacks", "Times a request moved on to its next-best pair.", registry=r)
        self.circuit = Gauge("atlas_circuit_state", "Circuit state per upstream: 0 closed, 1 half-open, 2 open.",
                             ["model"], registry=r)
        self.in_flight = Gauge("atlas_in_flight", "Requests running now.", registry=r)
        self.queued = Gauge("atlas_queued", "Requests waiting for a slot now.", registry=r)
        self.reloads = Counter("atlas_reloads", "Pool reloads by outcome.", ["outcome"], registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up in a plain dict after the first time: prometheus_client
        checks the values and takes a lock on every ``labels`` call, and a request makes six."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def render(self) -> bytes:
        return generate_latest(self.registry)
