"""Pool config: the default loads, and every kind of bad config names the file, the field and the fault."""

from __future__ import annotations

import pytest

from atlas_router.config import load_pool_config
from atlas_router.errors import ConfigError, UnknownNameError


def write(tmp_path, text: str):
    p = tmp_path / "pool.yaml"
    p.write_text(text)
    return p


def test_default_pool_has_every_foundation_tool():
    cfg = load_pool_config(None)
    assert [m.name for m in cfg.models] == ["smollm2-135m"]
    assert {t.kind for t in cfg.tools} >= {"none", "python_code", "calculator", "web_search", "prm"}
    assert ("smollm2-135m", "calculator") in cfg.pairs()
    assert len(cfg.pairs()) == len(cfg.models) * len(cfg.tools)


def test_broken_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "models:\n  - name: a\n    backend: [openai\n")
    with pytest.raises(ConfigError) as e:
        load_pool_config(p)
    assert str(p) in str(e.value) and "line" in str(e.value)


def test_missing_endpoint_names_field(tmp_path):
    p = write(tmp_path, "models:\n  - name: gpt\n    backend: openai\ntools:\n  - {name: none, kind: none}\n")
    with pytest.raises(ConfigError, match=r"models\.0.*endpoint"):
        load_pool_config(p)


def test_unknown_field_and_bad_kind(tmp_path):
    p = write(tmp_path, "models:\n  - {name: a, backend: openai, endpoint: 'http://x', colour: red}\ntools:\n  - {name: none, kind: none}\n")
    with pytest.raises(ConfigError, match="colour"):
        load_pool_config(p)
    p = write(tmp_path, "models:\n  - {name: a, backend: openai, endpoint: 'http://x'}\ntools:\n  - {name: t, kind: teleport}\n")
    with pytest.raises(ConfigError, match=r"tools\.0\.kind"):
        load_pool_config(p)


def test_duplicate_names_and_missing_file(tmp_path):
    p = write(tmp_path, "models:\n  - {name: a, backend: openai, endpoint: 'http://x'}\n  - {name: a, backend: openai, endpoint: 'http://y'}\ntools:\n  - {name: none, kind: none}\n")
    with pytest.raises(ConfigError, match="duplicate model names: a"):
        load_pool_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_pool_config(tmp_path / "nope.yaml")


def test_unknown_names_and_missing_key(tmp_path, monkeypatch):
    p = write(tmp_path, "models:\n  - {name: a, backend: openai, endpoint: 'http://x', api_key_env: ATLAS_TEST_KEY}\ntools:\n  - {name: none, kind: none}\n")
    cfg = load_pool_config(p)
    with pytest.raises(UnknownNameError, match="unknown model 'b'"):
        cfg.model("b")
    with pytest.raises(UnknownNameError, match="unknown tool 'x'"):
        cfg.tool("x")
    monkeypatch.delenv("ATLAS_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="ATLAS_TEST_KEY"):
        cfg.model("a").api_key()
    monkeypatch.setenv("ATLAS_TEST_KEY", "sk-test")
    assert cfg.model("a").api_key() == "sk-test"
