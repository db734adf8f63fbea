"""JSON bytes for the wire: response bodies, stream events and the bodies of model calls.

orjson where installed (the ``fast`` extra): several times cheaper than the standard library, and these
are encoded on every gateway request and every model call."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # the fast extra is not installed
    _orjson = None


def json_bytes(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON; a value of a type orjson does not know is written as its ``str()``."""
    if _orjson is not None:
        try:
            return _orjson.dumps(body, option=_orjson.OPT_NON_STR_KEYS | _orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:
            pass  # a type orjson does not know: the standard library's str() below
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()
