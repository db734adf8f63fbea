"""Objects named ``"package.module:Name"``, imported when first needed.

Why: the registries of tool kinds, routers and the plain-data classes of router files name their classes
as strings, so that asking for one kind does not import every other (torch, OCR, ...)."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(target: str) -> Any:
    """The object ``target`` names (``"package.module:Name"``); ImportError or AttributeError when absent."""
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"bad import target {target!r}: expected 'package.module:Name'")
    return getattr(importlib.import_module(module), name)
