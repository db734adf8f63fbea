"""Endpoints must be http(s) URLs with a host: a typo fails when the pool is read, in one line naming the field,
instead of after every retry of the first call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlas_router.config import load_pool_config
from atlas_router.errors import ConfigError

TOOLS = "tools:\n  - {name: none, kind: none}\n"


def pool(tmp_path: Path, endpoint: str, tools: str = TOOLS) -> Path:
    p = tmp_path / "pool.yaml"
    p.write_text(f"models:\n  - {{name: a, backend: openai, endpoint: '{endpoint}'}}\n{tools}")
    return p


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8000/v1", "localhost", "ftp://host/v1", "file:///etc/passwd",
                                      "http://", "http://host:notaport/v1", "http://host:99999/v1", "   "])
def test_endpoints_that_are_not_http_urls_fail_validation(tmp_path, endpoint):
    with pytest.raises(ConfigError, match=r"models\.0\.endpoint.*(http\(s\) URL|not a valid URL|needs 'endpoint')"):
        load_pool_config(pool(tmp_path, endpoint))


def test_good_endpoints_pass_and_tool_endpoints_are_checked_too(tmp_path):
    for url in ("http://127.0.0.1:8000/v1", "https://api.example.com/v1", " http://[::1]:9000/v1 "):
        assert load_pool_config(pool(tmp_path, url)).models[0].endpoint == url.strip()
    bad_tool = TOOLS + "  - {name: prm, kind: prm, settings: {endpoint: 'localhost:9000', reward_model: r}}\n"
    with pytest.raises(ConfigError, match=r"tools\.1\.settings.*'localhost:9000' is not an http\(s\) URL"):
        load_pool_config(pool(tmp_path, "http://127.0.0.1:1/v1", bad_tool))


def test_cli_reports_a_bad_endpoint_in_one_line_without_calling_it(tmp_path):
    p = pool(tmp_path, "127.0.0.1:8000/v1")
    proc = subprocess.run([sys.executable, "-m", "atlas_router", "pool", "show", "--pool", str(p)],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "models.0.endpoint" in lines[0] and "not an http(s) URL" in lines[0]
