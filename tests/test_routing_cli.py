"""``atlas fit``, ``atlas route`` and ``atlas eval`` as subprocesses on a records store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from fastapi import FastAPI, Request

from atlas_router.eval.split import split_records
from atlas_router.records.store import RecordStore
from support.routing_data import synthetic_records
from support.servers import free_port, running_server


def atlas(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atlas_router", *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=300)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("routing-cli")
    train, test = split_records(synthetic_records(n_per_topic=40, seed=3), test_size=0.3, seed=0)
    RecordStore(base / "train").append(train)
    RecordStore(base / "test").append(test)
    env = {**os.environ, "ATLAS_EMBED_CACHE_DIR": str(base / "embed-cache")}
    return base, env


def test_fit_then_route_with_explanations(stores):
    base, env = stores
    fit = atlas("fit", "cluster", "--records", str(base / "train"), "--out", str(base / "r.atlas"), "--k", "3",
                "--alpha", "0", "--encoder", "hashing:256", "--seed", "1", env=env)
    print(fit.stdout, fit.stderr[-500:])
    assert fit.returncode == 0 and "fitted atlas-cluster on 84 queries, 6 pairs" in fit.stdout
    assert fit.stdout.count("  cluster ") == 3
    plain = atlas("route", "--router-file", str(base / "r.atlas"), "What is 12 plus 30? (case 1)", env=env)
    assert plain.returncode == 0 and plain.stdout.strip() == "large python_code"
    explained = atlas("route", "--router-file", str(base / "r.atlas"), "--explain", "-", env=env,
                      stdin="Who wrote the novel number 7? (case 2)")
    print(explained.stdout)
    assert explained.returncode == 0 and "web_search" in explained.stdout.splitlines()[0]
    assert "cluster=" in explained.stdout and "ood=False" in explained.stdout and "utility" in explained.stdout
    js = atlas("route", "--router-file", str(base / "r.atlas"), "--json", "--explain", "--alpha", "1", "q one", "q two",
               env=env)
    rows = json.loads(js.stdout)
    assert [r["model"] for r in rows] == ["small", "small"] and rows[0]["explanation"]["alpha"] == 1.0


def test_eval_prints_tables_writes_json_and_report(stores):
    base, env = stores
    out = base / "eval.json"
    run = atlas("eval", "--train", str(base / "train"), "--test", str(base / "test"), "--routers",
                "atlas-cluster,best-single,oracle,knn", "--alpha", "0", "--encoder", "hashing:256", "--k", "3",
                "--json-out", str(out), "--report", str(base / "report"), env=env)
    print(run.stdout[-3000:], run.stderr[-1000:])
    assert run.returncode == 0
    assert "all benchmarks" in run.stdout and "arith" in run.stdout and "calls / query" in run.stdout
    data = json.loads(out.read_text())
    assert set(data["routers"]) == {"atlas-cluster", "best-single", "oracle", "knn"}
    for r in data["routers"].values():
        assert {"accuracy", "cost", "calls", "per_benchmark"} <= set(r)
        assert set(r["per_benchmark"]) == {"arith", "code", "facts"}
    assert data["frontier"] and (base / "report" / "report.html").exists()
    ood = atlas("eval", "--train", str(base / "train"), "--test", str(base / "test"), "--routers", "atlas-cluster",
                "--encoder", "hashing:256", "--ood", "arith,code", "--json", env=env)
    data = json.loads(ood.stdout)  # --json: the JSON alone on stdout, the tables on stderr
    assert data["protocol"]["ood"] == ["arith", "code"] and data["train"]["benchmarks"] == ["arith", "code"]


def test_bad_input_is_one_line_error(stores, tmp_path):
    base, env = stores
    cases = [
        (["fit", "cluster", "--records", str(tmp_path / "nope"), "--out", str(tmp_path / "r")], "records directory not found"),
        (["route", "--router-file", str(tmp_path / "missing.atlas"), "hi"], "router file not found"),
        (["eval", "--train", str(base / "train"), "--routers", "knn,nope"], "unknown router(s): nope"),
        (["eval", "--train", str(base / "train"), "--alpha", "2"], "alpha must lie in [0, 1]"),
        (["fit", "oracle", "--records", str(base / "train"), "--out", str(tmp_path / "r")], "cannot be fitted"),
        (["fit", "cluster", "--records", str(base / "train"), "--out", str(tmp_path / "r"), "--encoder", "bogus"],
         "unknown encoder spec"),
    ]
    for args, msg in cases:
        r = atlas(*args, env=env)
        print(args[0], r.returncode, r.stderr.strip())
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1


def picker_app(seen: list[int]) -> FastAPI:
    """An OpenAI-compatible chat server that always answers "Option 2" (the router's pick)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        seen.append(len(body["messages"]))
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Option 2"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52}}

    return app


def _pool_yaml(path, url: str):
    path.write_text(yaml.safe_dump({
        "models": [{"name": "router-llm", "backend": "openai", "endpoint": f"{url}/v1", "timeout_s": 5, "max_retries": 0}],
        "tools": [{"name": "none", "kind": "none"}], "cache": {"enabled": False},
    }))
    return path


def test_eval_runs_llm_routers_with_a_live_pool_model_and_skips_a_dead_one(stores, tmp_path):
    base, env = stores
    seen: list[int] = []
    args = ["eval", "--train", str(base / "train"), "--test", str(base / "test"), "--routers",
            "best-single,zero-shot,few-shot", "--encoder", "hashing:256", "--json"]
    with running_server(picker_app(seen)) as url:
        run = atlas(*args, "--pool", str(_pool_yaml(tmp_path / "live.yaml", url)), env=env)
    print(run.stderr[-800:])
    assert run.returncode == 0
    data = json.loads(run.stdout)
    n_test = data["test"]["queries"]
    for name in ("zero-shot", "few-shot"):
        assert len(data["routers"][name]["choices"]) == 1 and sum(data["routers"][name]["choices"].values()) == n_test
    assert seen.count(2) == n_test and seen.count(2 + 2 * 6) == n_test  # zero-shot: system+question; few-shot: +6 examples
    dead = atlas(*args, "--pool", str(_pool_yaml(tmp_path / "dead.yaml", f"http://127.0.0.1:{free_port()}")), env=env)
    data = json.loads(dead.stdout)
    assert set(data["routers"]) == {"best-single"} and "did not answer" in " ".join(data["notes"])
