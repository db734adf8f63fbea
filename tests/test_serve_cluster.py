"""The gateway serving a real ClusterRouter from a saved router file: decisions follow the clusters,
the explanation (cluster, distance, ood, top pairs) comes back, alpha moves the choice, and a reload
picks up a refitted router file without a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
import yaml

from atlas_router.routers.persist import save_router
from atlas_router.routers.cluster import ClusterRouter
from atlas_router.routers.encoders import build_encoder
from atlas_router.serve.auth import KeyRing
from atlas_router.serve.gateway import create_gateway_app
from atlas_router.serve.loaders import load_routers
from atlas_router.serve.settings import GatewaySettings
from support.gateway_helpers import http_pool, pool_config
from support.servers import free_port, running_server
from support.stub_upstream import create_stub_upstream

ARITHMETIC = [f"what is {a} plus {a + 3} in arithmetic" for a in range(12)]
HISTORY = [f"which king ruled france in the year {1500 + 7 * a} history" for a in range(12)]


def records(history_winner: str) -> pd.DataFrame:
    """Both pairs solve arithmetic (the cheap one wins on cost); only ``history_winner`` solves history."""
    rows = []
    for bench, queries in (("arith", ARITHMETIC), ("hist", HISTORY)):
        for i, q in enumerate(queries):
            for model, cost in (("cheap", 0.001), ("strong", 0.01)):
                score = 1.0 if bench == "arith" or model == history_winner else 0.0
                rows.append({"query_id": f"{bench}{i}", "query": q, "benchmark": bench, "model": model,
                             "tool": "none", "score": score, "cost": cost, "input_tokens": 20, "output_tokens": 8})
    return pd.DataFrame(rows)


def fit_and_save(path, history_winner: str) -> None:
    # Every setting given: no cross-validation (it scores accuracy at a = 0, where both pairs tie on
    # arithmetic, and would keep the best single pair); this test is about serving a fitted cluster file.
    router = ClusterRouter(k=2, alpha=0.2, n_init=2, shrinkage=0.0, task_weight=0.0, ridge_weight=0.0, evidence=0.0)
    router.fit(records(history_winner), build_encoder("hashing:256", cache=False))
    save_router(router, path)


@pytest.fixture()
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_EMBED_CACHE_DIR", str(tmp_path / "embed-cache"))
    router_file = tmp_path / "cluster.joblib"
    fit_and_save(router_file, history_winner="strong")
    with running_server(create_stub_upstream()) as up:
        routers, loaders = load_routers([router_file])
        app = create_gateway_app(http_pool(up, ["cheap", "strong"]), routers=routers, router_loaders=loaders,
                                 settings=GatewaySettings(), keys=KeyRing())
        with running_server(app) as gw:
            yield gw, router_file


def _ask(gw: str, question: str, **extra) -> httpx.Response:
    return httpx.post(f"{gw}/v1/chat/completions", timeout=30,
                      json={"model": "atlas", "messages": [{"role": "user", "content": question}], **extra})


def test_cluster_router_file_routes_by_cluster_and_explains(served):
    gw, _ = served
    assert [m["id"] for m in httpx.get(f"{gw}/v1/models").json()["data"]] == ["atlas", "atlas-cluster", "cheap", "strong"]
    arith = _ask(gw, "what is 4 plus 7 in arithmetic")
    hist = _ask(gw, "which king ruled france in the year 1610 history")
    assert arith.json()["atlas"]["pair"] == "cheap@@none" and hist.json()["atlas"]["pair"] == "strong@@none"
    assert hist.json()["choices"][0]["message"]["content"].startswith("strong says: which king")
    a, h = arith.json()["atlas"], hist.json()["atlas"]
    assert a["router"] == "atlas-cluster" and a["cluster"] != h["cluster"]
    assert hist.headers["x-atlas-cluster"] == str(h["cluster"])
    assert set(h["explanation"]) >= {"cluster", "distance", "ood", "top"} and h["explanation"]["ood"] is False
    assert [(t["model"], t["tool"]) for t in h["explanation"]["top"]][0] == ("strong", "none")
    assert h["utility"] == pytest.approx(h["explanation"]["top"][0]["utility"], abs=1e-3)


def test_alpha_override_trades_accuracy_for_cost(served):
    gw, _ = served
    question = "which king ruled france in the year 1610 history"
    assert _ask(gw, question).json()["atlas"]["pair"] == "strong@@none"
    cheapest = _ask(gw, question, atlas={"alpha": 1.0}).json()["atlas"]
    assert cheapest["pair"] == "cheap@@none" and cheapest["alpha_applied"] is True
    assert _ask(gw, question, atlas={"alpha": 2}).status_code == 400


def test_reload_picks_up_a_refitted_router_file(served):
    gw, router_file = served
    question = "which king ruled france in the year 1610 history"
    assert _ask(gw, question).json()["atlas"]["pair"] == "strong@@none"
    fit_and_save(router_file, history_winner="cheap")  # new records: the cheap model now wins history too
    r = httpx.post(f"{gw}/admin/reload")
    assert r.status_code == 200 and r.json()["routers"] == ["atlas-cluster"]
    assert _ask(gw, question).json()["atlas"]["pair"] == "cheap@@none"


def test_cli_serves_a_router_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_EMBED_CACHE_DIR", str(tmp_path / "embed-cache"))
    router_file = tmp_path / "cluster.joblib"
    fit_and_save(router_file, history_winner="strong")
    with running_server(create_stub_upstream()) as up:
        pool_file = tmp_path / "pool.yaml"
        pool_file.write_text(yaml.safe_dump(pool_config(up, ["cheap", "strong"])))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "atlas_router", "serve", "--pool", str(pool_file),
                                 "--router-file", str(router_file), "--port", str(port)],
                                env=dict(os.environ), stderr=subprocess.PIPE, text=True)
        gw = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(f"{gw}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.05)
            assert httpx.get(f"{gw}/health").json()["routers"] == ["atlas", "atlas-cluster"]
            hist = _ask(gw, "which king ruled france in the year 1610 history").json()["atlas"]
            assert hist["router"] == "atlas-cluster" and hist["pair"] == "strong@@none"
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    missing = subprocess.run([sys.executable, "-m", "atlas_router", "serve", "--router-file", str(tmp_path / "nope.joblib")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "router file not found" in missing.stderr
