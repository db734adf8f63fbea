"""Records: one row per (query, model, tool) with score, cost, tokens and latency; what routers learn from."""
