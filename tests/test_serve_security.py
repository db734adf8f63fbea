"""Gateway security: API keys (401), body size limits (413), keys kept only as digests and out of the
logs, and no model-written code evaluated in the server process."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from atlas_router.errors import ConfigError
from atlas_router.serve import auth
from atlas_router.serve.auth import KeyRing, digest
from atlas_router.serve.logs import JsonFormatter, redact
from atlas_router.serve.settings import GatewaySettings, load_gateway_settings
from support.gateway_helpers import client, gateway, http_pool, pool_config
from support.servers import free_port, running_server
from support.stub_upstream import create_stub_upstream

KEY = "sk-test-0123456789abcdef"
MSG = {"model": "atlas", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(scope="module")
def upstream():
    with running_server(create_stub_upstream()) as url:
        yield url


@pytest.fixture(scope="module")
def secured(upstream):
    with gateway(http_pool(upstream, ["echo"]), keys=KeyRing([digest(KEY)]), max_body_bytes=4096) as gw:
        yield gw


def test_missing_or_wrong_key_is_401(secured):
    with pytest.raises(openai.AuthenticationError) as info:
        client(secured, key="sk-wrong").chat.completions.create(**MSG)
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    r = httpx.post(f"{secured}/v1/chat/completions", json=MSG)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{secured}/v1/models").status_code == 401
    assert httpx.post(f"{secured}/admin/reload").status_code == 401
    assert httpx.post(f"{secured}/v1/chat/completions", json=MSG, headers={"authorization": KEY}).status_code == 401


def test_valid_key_passes_by_bearer_or_x_api_key(secured):
    resp = client(secured, key=KEY).chat.completions.create(**MSG)
    assert resp.choices[0].message.content.startswith("echo says: hello")
    assert httpx.post(f"{secured}/v1/chat/completions", json=MSG, headers={"x-api-key": KEY}).status_code == 200
    assert httpx.get(f"{secured}/health").status_code == 200  # probes need no key
    # with keys set, /metrics and /admin are not for API keys: 401 without a key, 403 with an API key
    bearer = {"authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{secured}/metrics").status_code == 401
    assert httpx.get(f"{secured}/metrics", headers=bearer).status_code == 403
    refused = httpx.post(f"{secured}/admin/reload", headers=bearer)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_key_required"
    assert "SIGHUP" in refused.json()["error"]["message"]  # no admin key configured: the way that remains


def test_metrics_and_admin_take_their_own_key(upstream):
    admin = "sk-admin-fedcba9876543210"
    ring, admin_ring = KeyRing([digest(KEY)]), KeyRing([digest(admin)])
    with gateway(http_pool(upstream, ["echo"]), keys=ring, admin_keys=admin_ring) as gw:
        as_user, as_admin = {"authorization": f"Bearer {KEY}"}, {"authorization": f"Bearer {admin}"}
        assert httpx.get(f"{gw}/metrics").status_code == 401
        assert httpx.get(f"{gw}/metrics", headers=as_user).status_code == 403
        assert httpx.get(f"{gw}/metrics", headers=as_admin).status_code == 200
        assert httpx.post(f"{gw}/admin/reload", headers=as_user).status_code == 403
        assert httpx.post(f"{gw}/admin/reload", headers=as_admin).json()["status"] == "reloaded"
        assert httpx.get(f"{gw}/v1/models", headers=as_admin).status_code == 401  # an admin key is not an API key
    with gateway(http_pool(upstream, ["echo"]), admin_keys=admin_ring) as gw:  # admin keys only: /v1 stays open
        assert httpx.get(f"{gw}/v1/models").status_code == 200
        assert httpx.get(f"{gw}/metrics").status_code == 401
        assert httpx.post(f"{gw}/admin/reload").status_code == 401
        assert httpx.post(f"{gw}/admin/reload", headers={"authorization": f"Bearer {admin}"}).status_code == 200
    with gateway(http_pool(upstream, ["echo"]), keys=ring, metrics_public=True) as gw:
        assert httpx.get(f"{gw}/metrics").status_code == 200  # an operator may publish /metrics on purpose
        assert httpx.post(f"{gw}/admin/reload", headers={"authorization": f"Bearer {KEY}"}).status_code == 403


def test_oversized_body_is_413_by_length_or_chunked(secured):
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    big = json.dumps({**MSG, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    r = httpx.post(f"{secured}/v1/chat/completions", content=big, headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no content-length: the limit is enforced while reading
        for i in range(0, len(big), 1000):
            yield big[i:i + 1000]

    r = httpx.post(f"{secured}/v1/chat/completions", content=chunks(), headers=headers)
    assert r.status_code == 413
    small = json.dumps(MSG).encode()
    assert httpx.post(f"{secured}/v1/chat/completions", content=iter([small]), headers=headers).status_code == 200
    with pytest.raises(openai.APIStatusError) as info:
        client(secured, key=KEY).chat.completions.create(model="atlas", messages=[{"role": "user", "content": "y" * 8000}])
    assert info.value.status_code == 413
    # without a key the body is never looked at: 401, not 413
    assert httpx.post(f"{secured}/v1/chat/completions", content=big,
                      headers={"content-type": "application/json"}).status_code == 401


def test_keys_from_environment_are_hashed_and_dropped(monkeypatch):
    monkeypatch.setenv("ATLAS_API_KEYS", "env-key-one, env-key-two")
    ring = KeyRing.from_sources([digest("config-key")])
    assert "ATLAS_API_KEYS" not in os.environ  # the plain keys do not outlive start-up
    assert len(ring) == 3
    assert ring.check("env-key-two") == digest("env-key-two")[:8]
    assert ring.check("config-key") == digest("config-key")[:8]
    assert ring.check("env-key-three") is None and ring.check("") is None and ring.check(None) is None
    stored = repr(vars(ring))
    assert "env-key" not in stored and "config-key" not in stored
    assert all(isinstance(d, bytes) and len(d) == 32 for d in ring._digests)
    monkeypatch.setenv("ATLAS_ADMIN_KEYS", "admin-one")
    monkeypatch.setenv("ATLAS_ADMIN_KEYS_SHA256", digest("admin-two"))
    admin = KeyRing.from_sources([], admin=True)
    assert "ATLAS_ADMIN_KEYS" not in os.environ and len(admin) == 2
    assert admin.check("admin-one") and admin.check("admin-two") and not admin.check("env-key-one")


def test_cli_serve_keeps_no_plain_key_in_proc_environ(upstream, tmp_path):
    """/proc/PID/environ shows the environment a process was started with, whatever os.environ says
    later: `atlas serve` re-executes itself with digests only, and the keys still work."""
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(yaml.safe_dump(pool_config(upstream, ["echo"])))
    port = free_port()
    env = {**os.environ, "ATLAS_API_KEYS": "sk-plain-api-1111,sk-plain-api-2222",
           "ATLAS_ADMIN_KEYS": "sk-plain-admin-3333"}
    proc = subprocess.Popen([sys.executable, "-m", "atlas_router", "serve", "--pool", str(pool_file),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gw = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{gw}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.time() < deadline and proc.poll() is None, "gateway did not start"
            time.sleep(0.05)
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()  # the pid the test started: the server itself
        assert b"sk-plain" not in environ and b"ATLAS_API_KEYS=" not in environ
        assert digest("sk-plain-api-2222").encode() in environ  # only digests were handed on
        assert httpx.get(f"{gw}/v1/models").status_code == 401
        assert httpx.get(f"{gw}/v1/models", headers={"authorization": "Bearer sk-plain-api-2222"}).status_code == 200
        admin = {"authorization": "Bearer sk-plain-admin-3333"}
        assert httpx.post(f"{gw}/admin/reload", headers={"authorization": "Bearer sk-plain-api-1111"}).status_code == 403
        assert httpx.post(f"{gw}/admin/reload", headers=admin).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_constant_time_comparison_is_used(monkeypatch):
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    ring = KeyRing([digest("a"), digest("b"), digest("c")])
    assert ring.check("a")
    assert len(calls) == 3  # every digest compared, no early exit on the first match


def test_config_digests_gate_the_gateway_and_bad_ones_are_config_errors(upstream, tmp_path, monkeypatch):
    monkeypatch.delenv("ATLAS_API_KEYS", raising=False)
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"api_keys_sha256: ['{digest('from-config')}']\nmax_body_bytes: 2048\n")
    settings = load_gateway_settings(cfg)
    from atlas_router.serve.gateway import create_gateway_app

    with running_server(create_gateway_app(http_pool(upstream, ["echo"]), settings=settings)) as gw:
        assert httpx.post(f"{gw}/v1/chat/completions", json=MSG).status_code == 401
        ok = httpx.post(f"{gw}/v1/chat/completions", json=MSG, headers={"authorization": "Bearer from-config"})
        assert ok.status_code == 200
    cfg.write_text("api_keys_sha256: ['plain-text-key']\n")
    with pytest.raises(ConfigError, match="api_keys_sha256.*64 hex digits"):
        load_gateway_settings(cfg)
    cfg.write_text("max_concurency: 3\n")
    with pytest.raises(ConfigError, match="max_concurency"):
        load_gateway_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_gateway_settings(tmp_path / "missing.yaml")
    assert GatewaySettings().max_body_bytes == 1_048_576


def test_no_key_reaches_the_logs(secured, caplog):
    caplog.set_level(logging.INFO, logger="atlas_router.gateway")
    client(secured, key=KEY).chat.completions.create(**MSG)
    httpx.post(f"{secured}/v1/chat/completions", json=MSG, headers={"authorization": "Bearer sk-intruder-9999999999"})
    lines = [JsonFormatter().format(r) for r in caplog.records]
    answered = [json.loads(line) for line in lines if '"request answered"' in line]
    assert answered and answered[-1]["key_id"] == digest(KEY)[:8]  # who called, by digest prefix only
    assert not any(KEY in line or "sk-intruder" in line for line in lines)


def test_redaction_masks_secrets():
    text = redact('Authorization: Bearer abc.def api_key="sk-live-1234567890" password=hunter2 token: xyz')
    assert "abc.def" not in text and "sk-live-1234567890" not in text and "hunter2" not in text and "xyz" not in text
    record = logging.LogRecord("atlas_router.gateway", logging.INFO, "", 0, "key %s", ("sk-abcdef123456789",), None)
    assert "sk-abcdef123456789" not in JsonFormatter().format(record)


def test_serving_code_never_evaluates_code_in_process():
    """No eval/exec/compile, no pickle or marshal loads, no dynamic imports in the serving modules."""
    serve_dir = Path(__file__).resolve().parents[1] / "src" / "atlas_router" / "serve"
    banned_calls = {"eval", "exec", "compile", "__import__", "execfile"}
    banned_modules = {"pickle", "marshal", "dill", "cloudpickle", "shelve", "runpy", "code", "codeop"}
    files = sorted(serve_dir.glob("*.py")) + [serve_dir.parent / "cli" / "serve.py"]
    assert len(files) >= 10
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in banned_calls, f"{path.name}:{node.lineno} calls {node.func.id}"
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & banned_modules, f"{path.name}:{node.lineno}"
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in banned_modules, f"{path.name}:{node.lineno}"


def test_model_written_code_runs_outside_the_server_process(upstream):
    tools = [{"name": "python-code", "kind": "python_code", "settings": {"timeout_s": 10}}]
    with gateway(http_pool(upstream, ["coder"], tools=tools)) as gw:
        r = httpx.post(f"{gw}/v1/chat/completions", timeout=60,
                       json={**MSG, "atlas": {"allowed_pairs": ["coder@@python-code"]}})
    assert r.status_code == 200, r.text
    text = r.json()["choices"][0]["message"]["content"]
    match = re.search(r"The code printed: pid (\d+)", text)
    assert match, text
    assert int(match.group(1)) != os.getpid()  # the gateway (this process) only relayed the sandbox's output
