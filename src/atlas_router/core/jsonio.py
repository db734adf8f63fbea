"""JSON for the wire: response bodies, stream events and the bodies of model calls written, request and
reply bodies read.

orjson where installed (the ``fast`` extra): several times cheaper than the standard library, and these
are written and read on every gateway request and every model call."""

from __future__ import annotations

import json
import re
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


_LONG_INTEGER = re.compile(rb"\d{19}")  # orjson reads integers past 64 bits as floats; the standard library keeps them


def strict_loads(raw: bytes) -> Any:
    """``raw`` read by orjson, which refuses NaN, Infinity, numbers that overflow to infinity, lone UTF-16
    surrogates and invalid UTF-8. ValueError for those, for invalid JSON, for text with an integer of 19 or
    more digits (orjson would make it a float) and when orjson is not installed: the caller then reads it
    with the standard library, which takes some of them and says where the rest are wrong."""
    if _orjson is None or _LONG_INTEGER.search(raw):
        raise ValueError("not for orjson")
    return _orjson.loads(raw)  # its JSONDecodeError is a ValueError


def json_loads(raw: bytes) -> Any:
    """``raw`` as ``json.loads`` reads it: through ``strict_loads`` where that takes it (the same values),
    else the standard library."""
    try:
        return strict_loads(raw)
    except ValueError:
        return json.loads(raw)
