"""The execution CLI as a user runs it: a real subprocess, the embedded pool, and bad input of every kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def atlas(*args: str, stdin: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "atlas_router", *args], input=stdin, capture_output=True, timeout=timeout, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    err = proc.stderr.decode("utf-8", "replace").strip()
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_ask_default_pool_offline_json():
    proc = atlas("ask", "--model", "smollm2-135m", "--tool", "none", "--json",
                 "What is the capital city of France? Answer with the city.")
    assert proc.returncode == 0, proc.stderr.decode()
    record = json.loads(proc.stdout)
    for key in ("answer", "input_tokens", "output_tokens", "cost", "latency_s", "error"):
        assert key in record
    assert record["error"] is None
    assert "paris" in record["answer"].lower()
    assert record["input_tokens"] > 0 and record["output_tokens"] > 0 and record["cost"] > 0


@pytest.mark.parametrize(
    "args, needles",
    [
        (["ask", "--model", "gpt-9", "hi"], ["unknown model 'gpt-9'"]),
        (["ask", "--tool", "teleport", "hi"], ["unknown tool 'teleport'"]),
        (["ask", "   "], ["question is empty"]),
        (["ask", "x" * 120_000], ["the limit is 100,000"]),
        (["tool", "nope", "1+1"], ["unknown tool 'nope'"]),
    ],
)
def test_bad_input_one_line_error(args, needles):
    assert_one_line_error(atlas(*args), *needles)


def test_broken_yaml_and_missing_endpoint(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n  {name: a\n")
    assert_one_line_error(atlas("ask", "--pool", str(broken), "hi"), "broken YAML", str(broken))
    no_endpoint = tmp_path / "noendpoint.yaml"
    no_endpoint.write_text("models:\n  - {name: a, backend: openai}\ntools:\n  - {name: none, kind: none}\n")
    assert_one_line_error(atlas("pool", "check", "--pool", str(no_endpoint)), "endpoint")


def test_missing_endpoint_key(tmp_path):
    cfg = tmp_path / "key.yaml"
    cfg.write_text("models:\n  - {name: a, backend: openai, endpoint: 'http://127.0.0.1:9/v1', api_key_env: ATLAS_NO_SUCH_KEY}\ntools:\n  - {name: none, kind: none}\n")
    proc = atlas("ask", "--pool", str(cfg), "--model", "a", "--tool", "none", "--json", "hi")
    assert proc.returncode != 0
    assert b"Traceback" not in proc.stderr
    assert b"ATLAS_NO_SUCH_KEY" in proc.stdout + proc.stderr


def test_megabyte_question_from_stdin_and_non_utf8_bytes():
    assert_one_line_error(atlas("ask", "-", stdin=b"y" * 1_048_576), "1,048,576 characters")
    assert_one_line_error(atlas("ask", "-", stdin=b"caf\xe9 \xff\xfe?"), "not valid UTF-8")
    # bytes that are not UTF-8 as a command-line argument reach Python as surrogates
    env = dict(os.environ)
    proc = subprocess.run([sys.executable.encode(), b"-m", b"atlas_router", b"ask", b"\xff\xfebad"], capture_output=True, env=env, timeout=120)
    assert_one_line_error(proc, "not valid UTF-8")
