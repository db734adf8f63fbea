"""Environment variables are read through atlas_router.config when they are used, never at import."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pytest

from atlas_router import config
from atlas_router.config import cache_dir, env, env_flag, env_path, export_env, secret, subprocess_env


def _fake_transformers(monkeypatch, loaded: list[str]) -> None:
    """A stand-in ``transformers`` that records which directory a model is loaded from."""
    class Auto:
        @staticmethod
        def from_pretrained(path, **_):
            loaded.append(path)
            return object()

    root = types.ModuleType("transformers")
    root.AutoTokenizer = root.AutoModelForCausalLM = Auto
    utils = types.ModuleType("transformers.utils")
    utils.logging = types.SimpleNamespace(disable_progress_bar=lambda: None)
    monkeypatch.setitem(sys.modules, "transformers", root)
    monkeypatch.setitem(sys.modules, "transformers.utils", utils)


def test_the_model_cache_follows_atlas_model_cache_set_after_import(tmp_path, monkeypatch):
    """The converted-weights directory is the one ATLAS_MODEL_CACHE names when a model loads, even when
    the variable is set after atlas_router.models.local was imported (it used to be read at import)."""
    from atlas_router.models import local

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    loaded: list[str] = []
    _fake_transformers(monkeypatch, loaded)
    for name in ("first", "second"):  # two settings in one process: each load follows the current one
        cache = tmp_path / name
        monkeypatch.setenv("ATLAS_MODEL_CACHE", str(cache))
        assert local.converted_dir() == cache
        stat = gguf.stat()
        digest = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
        converted = cache / f"tiny-{digest}"
        converted.mkdir(parents=True)
        (converted / "config.json").write_text("{}")  # already converted: load_transformers loads it from there
        local.load_transformers(str(gguf))
        assert loaded[-2:] == [str(converted), str(converted)]
    monkeypatch.delenv("ATLAS_MODEL_CACHE")
    assert local.converted_dir() == cache_dir("models") == Path("~/.cache/atlas-router/converted").expanduser()


def test_cache_dirs_follow_their_variables_at_call_time(tmp_path, monkeypatch):
    for kind, name in config.CACHE_DIRS.items():
        monkeypatch.setenv(name, str(tmp_path / kind))
        assert cache_dir(kind) == tmp_path / kind
        monkeypatch.setenv(name, "")  # empty counts as unset: the default
        assert cache_dir(kind) == Path(config.ENV_VARS[name].default).expanduser()
    assert cache_dir("responses", tmp_path / "pool-dir") == tmp_path / "pool-dir"  # the pool's cache.dir
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "env-dir"))
    assert cache_dir("responses", tmp_path / "pool-dir") == tmp_path / "env-dir"  # the variable wins
    with pytest.raises(KeyError, match="unknown cache"):
        cache_dir("nope")


def test_the_pool_response_cache_follows_atlas_cache_dir(tmp_path, monkeypatch):
    from atlas_router.pool.pool import Pool

    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "responses"))
    pool = Pool.load(None)
    assert pool.cache is not None and pool.cache.path == tmp_path / "responses" / "responses.sqlite"


def test_accessors(tmp_path, monkeypatch):
    monkeypatch.delenv("ATLAS_IMAGE_ROOT", raising=False)
    assert env("ATLAS_IMAGE_ROOT") is None and env_path("ATLAS_IMAGE_ROOT") is None
    monkeypatch.setenv("ATLAS_IMAGE_ROOT", "~/images")
    assert env_path("ATLAS_IMAGE_ROOT") == Path("~/images").expanduser()
    for value, on in (("1", True), ("TRUE", True), (" yes ", True), ("0", False), ("", False), ("no", False)):
        monkeypatch.setenv("ATLAS_ALLOW_REMOTE_IMAGES", value)
        assert env_flag("ATLAS_ALLOW_REMOTE_IMAGES") is on
    with pytest.raises(KeyError, match="not a declared"):
        env("ATLAS_NOT_DECLARED")
    monkeypatch.setenv("SOME_KEY_NAMED_BY_CONFIG", "k")
    assert secret("SOME_KEY_NAMED_BY_CONFIG") == "k"
    assert secret("SOME_KEY_NAMED_BY_CONFIG", consume=True) == "k" and secret("SOME_KEY_NAMED_BY_CONFIG") is None
    monkeypatch.setenv("ATLAS_SERVE_ARGS", "")  # monkeypatch restores it afterwards
    export_env("ATLAS_SERVE_ARGS", '{"a": 1}')
    assert env("ATLAS_SERVE_ARGS") == '{"a": 1}'
    with pytest.raises(KeyError):
        export_env("ATLAS_NOT_DECLARED", "x")
    monkeypatch.setenv("ATLAS_EMBED_API_KEY", "hidden")
    child = subprocess_env(only={"PATH": "/bin", "NOT_SET_ANYWHERE_XYZ": "dflt"}, EXTRA="1")
    assert set(child) == {"PATH", "NOT_SET_ANYWHERE_XYZ", "EXTRA"} and child["NOT_SET_ANYWHERE_XYZ"] == "dflt"
    assert subprocess_env(EXTRA="1")["ATLAS_EMBED_API_KEY"] == "hidden"
