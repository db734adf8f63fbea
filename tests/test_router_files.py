"""Router files are data only: every router round-trips through the zip format, and crafted files (pickle
payloads, bad manifests, foreign class names, untrusted estimator types, object arrays) get a one-line
error and run no code. The payloads below would create a marker file if anything executed them."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest

from atlas_router.routers.persist import save_router
from atlas_router.errors import AtlasError
from atlas_router.eval.split import split_records
from atlas_router.routers import load_router, make_router, read_manifest, router_names
from atlas_router.routers.encoders import build_encoder
from atlas_router.routers.persist import (
    FILE_VERSION, LegacyRouterFileError, RouterFileError, migrate_router_file,
)
from atlas_router.serve.loaders import load_routers
from support.routing_data import synthetic_records

# bert fine-tunes MiniLM (minutes on a CPU): its save/load is covered in test_routing_baselines.py
SLOW = {"bert"}


class Payload:
    """Unpickling this runs ``touch MARKER``: proof that a loader executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def atlas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "atlas_router", *args], capture_output=True, text=True, timeout=300)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("hashing:256", cache=False)


@pytest.fixture(scope="module")
def split():
    return split_records(synthetic_records(n_per_topic=40, seed=1), test_size=0.3, seed=0)


@pytest.fixture(scope="module")
def cluster_file(split, encoder, tmp_path_factory):
    router = make_router("atlas-cluster", alpha=0.2, k=3).fit(split[0], encoder)
    return router, save_router(router, tmp_path_factory.mktemp("cluster") / "router.atlas")


def same(a, b, where="state") -> None:
    """Deep equality of saved state: arrays by value and dtype, containers by type and content."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    elif hasattr(a, "__dataclass_fields__"):
        same(vars(a), vars(b), where)
    elif type(a).__module__.startswith("sklearn"):
        same(a.get_params(), b.get_params(), f"{where}.params")
    elif type(a).__module__.startswith("torch"):
        assert a.dtype == b.dtype and np.array_equal(a.numpy(), b.numpy()), where
    elif type(a).__module__.startswith("atlas_router.config"):
        assert a.model_dump() == b.model_dump(), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_every_router_round_trips_with_its_state_and_decisions(split, encoder, cluster_file, tmp_path):
    train, test = split
    qs = test["query"].unique()[:15].tolist()
    names = [n for n in router_names() if n not in SLOW]  # every registered router, new ones included
    assert {"atlas-cluster", "random", "best-single", "oracle", "knn", "mlp", "routerdc", "zero-shot",
            "few-shot"} <= set(names)
    for name in names:
        if name == "atlas-cluster":
            router = cluster_file[0]
        else:
            router = make_router(name, alpha=0.3, **({"steps": 50} if name == "routerdc" else {})).fit(
                test if name == "oracle" else train, encoder)  # the oracle's state holds a QueryTable
        path = save_router(router, tmp_path / f"{name}.atlas")
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            assert "manifest.json" in names and "state.json" in names
            assert all(n.endswith((".json", ".npy", ".skops", ".safetensors")) for n in names), names
            if name == "routerdc":  # torch state dicts as safetensors, scikit-learn estimators through skops
                assert "tensors.safetensors" in names
            if name == "mlp":
                assert any(n.endswith(".skops") for n in names)
        loaded = load_router(path, encoder)
        assert type(loaded) is type(router)
        same(router.__getstate__(), loaded.__getstate__(), name)
        if name not in ("zero-shot", "few-shot"):  # these need a chat model to route (set_model)
            assert [d.to_dict() for d in loaded.route(qs)] == [d.to_dict() for d in router.route(qs)], name
        m = read_manifest(path)
        assert m["router"] == name and m["format_version"] == FILE_VERSION and m["data_hash"] == router.data_hash_


def rewrite(src: Path, dst: Path, **members: bytes | str) -> Path:
    """A copy of a router zip with some members replaced (or added)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename not in members:
                zout.writestr(info, zin.read(info.filename))
        for name, data in members.items():
            zout.writestr(name, data)
    return dst


def test_pickle_payload_runs_nothing_and_gets_one_line(cluster_file, tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.atlas"
    joblib.dump({"manifest": {"format": "atlas-router", "format_version": 1}, "router": Payload(marker)}, crafted,
                compress=3)
    raw = tmp_path / "raw.atlas"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    for path in (crafted, raw):
        with pytest.raises(LegacyRouterFileError, match="format version 1 .* --trust"):
            load_router(path)
        with pytest.raises(LegacyRouterFileError):
            read_manifest(path)
        with pytest.raises(AtlasError):
            load_routers([path])  # the gateway's loader (atlas serve, reload)
        line = one_line_error(atlas("route", "--router-file", str(path), "What is 2+2?"))
        assert "can run code" in line and "atlas router-file migrate --trust" in line
    one_line_error(atlas("router-file", "show", str(crafted)))
    one_line_error(atlas("router-file", "migrate", str(crafted)))  # without --trust: refused
    assert not marker.exists()


def test_crafted_zips_get_one_line_errors_and_run_nothing(cluster_file, tmp_path):
    router, good = cluster_file
    marker = tmp_path / "pwned"
    manifest = json.loads(zipfile.ZipFile(good).read("manifest.json"))
    state = json.loads(zipfile.ZipFile(good).read("state.json"))

    def with_manifest(**changes):
        return json.dumps({**manifest, **changes})

    def with_attr(name, node):
        return json.dumps({**state, "attributes": {"__atlas__": "dict", "v": {**state["attributes"]["v"], name: node}}})

    pickled_npy = io.BytesIO()
    np.save(pickled_npy, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    untrusted_est = sio.dumps(Pipeline([("f", FunctionTransformer(os.system))]))
    cases = {
        "not-json": ({"manifest.json": "{not json"}, "not valid JSON"),
        "deep-json": ({"state.json": "[" * 200_000 + "]" * 200_000}, "not valid JSON"),
        "deep-tree": ({"state.json": with_attr("x_", json.loads("[" * 100 + "]" * 100))}, "nested deeper"),
        "foreign-format": ({"manifest.json": with_manifest(format="pickle")}, "not an atlas router file"),
        "newer-version": ({"manifest.json": with_manifest(format_version=FILE_VERSION + 1)},
                          f"reads versions up to {FILE_VERSION}: upgrade"),
        "non-router-name": ({"manifest.json": with_manifest(router="os:system")}, "not a registered router"),
        "builtin-name": ({"manifest.json": with_manifest(router="builtins.eval")}, "not a registered router"),
        "object-array": ({"state.json": with_attr("evil_", {"__atlas__": "ndarray", "file": "arrays/999.npy"}),
                          "arrays/999.npy": pickled_npy.getvalue()}, "damaged router file"),
        "foreign-class": ({"state.json": with_attr("evil_", {"__atlas__": "object", "class": "subprocess.Popen",
                                                              "fields": {"__atlas__": "dict", "v": {}}})},
                          "not plain data"),
        "untrusted-estimator": ({"state.json": with_attr("evil_", {"__atlas__": "sklearn", "file": "sklearn/9.skops"}),
                                 "sklearn/9.skops": untrusted_est}, "outside the trust list"),
        "method-shadow": ({"state.json": with_attr("route", 1)}, "cannot hold"),
        "dunder": ({"state.json": with_attr("__class__", 1)}, "cannot hold"),
        "missing-member": ({"state.json": with_attr("x_", {"__atlas__": "ndarray", "file": "../../etc/passwd"})},
                           "missing or misplaced member"),
        "unknown-tag": ({"state.json": with_attr("x_", {"__atlas__": "eval", "v": "1"})}, "unknown node type"),
        "bad-setting": ({"state.json": json.dumps({**state, "params": {"__atlas__": "dict", "v": {"cmd": "ls"}}})},
                        "has no setting 'cmd'"),
        "unfitted": ({"state.json": json.dumps({**state, "attributes": {"__atlas__": "dict", "v": {}}})},
                     "holds no fitted router"),
    }
    for label, (members, message) in cases.items():
        path = rewrite(good, tmp_path / f"{label}.atlas", **members)
        with pytest.raises(RouterFileError, match=message):
            load_router(path)
    line = one_line_error(atlas("route", "--router-file", str(tmp_path / "non-router-name.atlas"), "What is 2+2?"))
    assert "not a registered router" in line
    (tmp_path / "garbage.atlas").write_bytes(b"not a router")
    with pytest.raises(RouterFileError, match="not a readable router file"):
        load_router(tmp_path / "garbage.atlas")
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for k in range(start + 10, start + 30):
        raw[k] ^= 0xFF  # garble the largest member's data: its CRC no longer matches
    (tmp_path / "garbled.atlas").write_bytes(bytes(raw))
    with pytest.raises(RouterFileError, match="damaged router file"):
        load_router(tmp_path / "garbled.atlas")
    (tmp_path / "truncated.atlas").write_bytes(good.read_bytes()[:200])
    one_line_error(atlas("route", "--router-file", str(tmp_path / "truncated.atlas"), "What is 2+2?"))
    assert not marker.exists()


def test_trusted_legacy_file_migrates_and_a_non_router_pickle_is_refused(cluster_file, tmp_path, encoder):
    router, _ = cluster_file
    old = tmp_path / "old.joblib"
    joblib.dump({"manifest": {**router.manifest(), "format": "atlas-router", "format_version": 1}, "router": router}, old, compress=3)
    qs = ["What is 12 plus 30?", "Who wrote the novel?"]
    assert [d.pair for d in load_router(old, encoder, trusted=True).route(qs)] == [d.pair for d in router.route(qs)]
    proc = atlas("router-file", "migrate", "--trust", str(old), "--out", str(tmp_path / "new.atlas"))
    assert proc.returncode == 0, proc.stderr
    assert "format version 2" in proc.stdout
    migrated = load_router(tmp_path / "new.atlas", encoder)  # now loads without trust
    assert [d.pair for d in migrated.route(qs)] == [d.pair for d in router.route(qs)]
    shown = json.loads(atlas("router-file", "show", str(tmp_path / "new.atlas")).stdout)
    assert shown["router"] == "atlas-cluster" and shown["format_version"] == FILE_VERSION
    # in place, through the Python API
    assert migrate_router_file(old, trusted=True) == old and zipfile.is_zipfile(old)

    not_router = tmp_path / "dict.joblib"
    joblib.dump({"manifest": {"format": "atlas-router", "format_version": 1}, "router": {"a": 1}}, not_router)
    with pytest.raises(RouterFileError, match="holds a dict, not a router"):
        load_router(not_router, trusted=True)


def test_unsavable_state_is_refused_at_save_time(split, encoder, tmp_path):
    router = make_router("random").fit(split[0], encoder)
    router.handle_ = open(os.devnull)  # a live handle is not data
    try:
        with pytest.raises(RouterFileError, match=r"cannot save state\.handle_"):
            save_router(router, tmp_path / "r.atlas")
    finally:
        router.handle_.close()
    assert not (tmp_path / "r.atlas").exists()


def test_gateway_keeps_serving_when_a_reload_meets_a_crafted_file(tmp_path, monkeypatch):
    """`atlas serve` refuses a crafted file at start in one line; /admin/reload refuses it with 400 and keeps
    the router it had; the payload never runs."""
    import httpx
    import pandas as pd

    from atlas_router.serve.auth import KeyRing
    from atlas_router.serve.gateway import create_gateway_app
    from atlas_router.serve.settings import GatewaySettings
    from support.gateway_helpers import http_pool
    from support.servers import running_server
    from support.stub_upstream import create_stub_upstream

    monkeypatch.setenv("ATLAS_EMBED_CACHE_DIR", str(tmp_path / "embed-cache"))
    rows = [{"query_id": f"{b}{i}", "query": f"{b} question number {i}", "benchmark": b, "model": m, "tool": "none",
             "score": float(b == "arith" or m == "strong"), "cost": c}
            for b in ("arith", "hist") for i in range(10) for m, c in (("cheap", 0.001), ("strong", 0.01))]
    router = make_router("atlas-cluster", k=2, alpha=0.2).fit(pd.DataFrame(rows), build_encoder("hashing:256",
                                                                                                cache=False))
    path = save_router(router, tmp_path / "router.atlas")
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.atlas"
    crafted.write_bytes(pickle.dumps(Payload(marker)))
    served = atlas("serve", "--router-file", str(crafted), "--port", "1")
    errors = [ln for ln in served.stderr.splitlines() if not ln.startswith('{"ts"')]  # JSON log lines aside
    assert served.returncode == 2 and len(errors) == 1 and "can run code" in errors[0], served.stderr

    with running_server(create_stub_upstream()) as up:
        routers, loaders = load_routers([path])
        app = create_gateway_app(http_pool(up, ["cheap", "strong"]), routers=routers, router_loaders=loaders,
                                 settings=GatewaySettings(), keys=KeyRing())
        with running_server(app) as gw:
            path.write_bytes(crafted.read_bytes())  # the operator's file is swapped for a payload
            r = httpx.post(f"{gw}/admin/reload", timeout=60)
            assert r.status_code == 400 and "can run code" in r.text and "still serving" in r.text
            ok = httpx.post(f"{gw}/v1/chat/completions", timeout=30,
                            json={"model": "atlas", "messages": [{"role": "user", "content": "arith question 3"}]})
            assert ok.status_code == 200 and ok.json()["atlas"]["router"] == "atlas-cluster"
    assert not marker.exists()
