"""Every tool refuses settings it does not know, so a typo in a pool file is reported, not ignored."""

from __future__ import annotations

import pytest

from atlas_router.config import ToolSpec
from atlas_router.errors import ConfigError
from atlas_router.tools.registry import build_tool


@pytest.mark.parametrize("kind, setting", [("python_code", "timeout"), ("calculator", "digits"),
                                           ("web_search", "topk"), ("prm", "samples")])
def test_misspelt_settings_are_config_errors(kind, setting):
    with pytest.raises(ConfigError, match=f"unknown setting\\(s\\) {setting}"):
        build_tool(ToolSpec(name="t", kind=kind, settings={setting: 1}))
