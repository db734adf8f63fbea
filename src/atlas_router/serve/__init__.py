"""HTTP serving: the OpenAI-compatible wire format, a plain model server, and the routing gateway."""
