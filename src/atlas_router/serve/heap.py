"""The serving process's garbage collector, settled once the gateway has started.

Why: a gateway process holds ~130k long-lived objects after start-up (the framework, pydantic models, the
routers' arrays, numpy and friends), and every full collection walked all of them: under load, each one
paused the event loop for 100-150 ms (every request in flight waited), and the young generation,
collected every 700 net allocations, ran twice a request's worth of objects for nothing, since what a
request allocates is freed by reference counting when it ends. Measured with gc.callbacks on
``bench/gateway_load.py``'s 32 clients: about a second of collection per 6,000 requests, most of it
gone after this (docs/speed.md).

So, once (the process is the server's own): collect, then ``gc.freeze()`` the survivors (they move to a
permanent generation no collection walks again), and raise the young-generation threshold to
``GEN0_THRESHOLD``. Reference cycles are still collected; just less often.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 7000  # 10x CPython's default 700: a few dozen requests in flight keep that many objects alive


def settle_heap() -> None:
    """Freeze what start-up left and collect the young generation less often (module docs)."""
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GEN0_THRESHOLD), gen1, gen2)
