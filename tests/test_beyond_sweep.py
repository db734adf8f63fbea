"""K/encoder sweep (held-out utility, silhouette, Davies-Bouldin) and run manifests."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from atlas_router.errors import AtlasError
from atlas_router.eval.manifest import array_hash, manifest_path, run_manifest, write_output
from atlas_router.eval.sweep import MemoEncoder, cluster_quality, parse_ks, sweep
from atlas_router.records.store import RecordStore
from atlas_router.routers.encoders import build_encoder
from atlas_router.routers.table import records_hash
from support.routing_data import synthetic_records


def test_cluster_quality_by_hand():
    # two tight, far-apart pairs of points: a = 0.1 inside, b ~ 10 across -> silhouette 1 - 0.1/10.0005 ~ 0.99
    z = np.array([[0.0, 0.0], [0.0, 0.1], [10.0, 0.0], [10.0, 0.1]])
    q = cluster_quality(z, np.array([0, 0, 1, 1]))
    assert q["silhouette"] == pytest.approx(1 - 0.1 / np.mean([10.0, np.hypot(10, 0.1)]), abs=1e-6)
    # Davies-Bouldin: scatter 0.05 per cluster, centroid distance 10: (0.05 + 0.05) / 10 = 0.01
    assert q["davies_bouldin"] == pytest.approx(0.01)
    assert cluster_quality(z, np.zeros(4, dtype=int)) == {"silhouette": None, "davies_bouldin": None}
    assert parse_ks("4, 8,8,16") == [4, 8, 16]
    with pytest.raises(AtlasError):
        parse_ks("4,x")


def test_sweep_rows_and_shared_embeddings():
    records = synthetic_records(n_per_topic=40, seed=2)
    inner = build_encoder("hashing:128", cache=False)
    calls = []
    original = inner.encode
    inner.encode = lambda texts: calls.append(len(texts)) or original(texts)  # count real encodes
    result = sweep(records, [2, 3, 6], [inner], alpha=0.3, router_params={"n_init": 2})
    rows = result["rows"]
    for r in rows:
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    assert [r["k"] for r in rows] == [2, 3, 6]
    # every query embedded once for all three K: train + test = 120 distinct queries
    assert sum(calls) == records["query_id"].nunique()
    for r in rows:
        assert -1 <= r["silhouette"] <= 1 and r["davies_bouldin"] > 0
        assert r["utility"] == pytest.approx(0.7 * r["accuracy"] - 0.3 * r["cost"] /
                                             result["routers"][f"hashing-128/k={r['k']}"].cost_scale_)
    assert rows[0]["inertia"] > rows[2]["inertia"]  # more clusters, tighter


def test_memo_encoder_keeps_identity():
    inner = build_encoder("hashing:64", cache=False)
    memo = MemoEncoder(inner)
    assert (memo.name, memo.spec, memo.dim) == (inner.name, inner.spec, inner.dim)
    a = memo.encode(["x y", "z"])
    assert np.allclose(a, inner.encode(["x y", "z"])) and len(memo._memo) == 2


def test_manifest_beside_output(tmp_path):
    records = synthetic_records(n_per_topic=10, seed=3)
    enc = build_encoder("hashing:64", cache=False)
    from atlas_router.routers.cluster import ClusterRouter

    router = ClusterRouter(k=3, n_init=1).fit(records, enc)
    man = run_manifest("test", data={"all": records}, encoders={"enc": enc}, routers={"r": router},
                       seeds={"split": 7}, settings={"k": [3]})
    assert man["data"]["all"]["hash"] == records_hash(records)
    assert man["data"]["all"]["n_queries"] == records["query_id"].nunique()
    assert man["encoders"]["enc"]["name"] == "hashing-64" and len(man["encoders"]["enc"]["hash"]) == 16
    r = man["routers"]["r"]
    assert r["k"] == 3 and r["seed"] == 0 and r["centroids_hash"] == array_hash(router.centroids_)
    assert "versions" not in r and man["versions"]["scikit-learn"]
    out, mpath = write_output(tmp_path / "res.json", {"x": 1}, man)
    assert mpath == manifest_path(out) == tmp_path / "res.json.manifest.json"
    assert json.loads(mpath.read_text())["seeds"] == {"split": 7}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.json", "res.json.manifest.json"]


def test_sweep_cli(tmp_path):
    store = tmp_path / "records"
    RecordStore(store).append(synthetic_records(n_per_topic=30, seed=4))
    out = tmp_path / "sweep.json"
    cmd = [sys.executable, "-m", "atlas_router", "sweep", "--records", str(store), "--k", "2,4",
           "--encoders", "hashing:64,hashing:128", "--json-out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    print(proc.stdout, proc.stderr[-2000:])
    assert proc.returncode == 0 and "silhouette" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["encoder"], r["k"]) for r in rows] == [("hashing-64", 2), ("hashing-64", 4), ("hashing-128", 2),
                                                       ("hashing-128", 4)]
    manifest = json.loads((tmp_path / "sweep.json.manifest.json").read_text())
    assert set(manifest["encoders"]) == {"hashing-64", "hashing-128"} and len(manifest["routers"]) == 4
    bad = subprocess.run(cmd[:7] + ["0,2"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--k" in bad.stderr
