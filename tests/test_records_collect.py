"""``atlas collect`` end to end: real subprocesses against a loopback upstream; SIGKILL and resume give the
same records as an uninterrupted run; the Ray path gives the same records too."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from atlas_router.records.store import RecordStore
from support.deterministic_upstream import create_deterministic_app
from support.servers import running_server


@pytest.fixture(scope="module")
def upstream():
    with running_server(create_deterministic_app(delay_s=0.03)) as url:
        yield url


def pool_file(tmp_path, url: str):
    p = tmp_path / "pool.yaml"
    p.write_text(
        "models:\n"
        f"  - {{name: good, backend: openai, endpoint: '{url}/v1', price: {{input: 1.0, output: 2.0}}}}\n"
        f"  - {{name: noisy, backend: openai, endpoint: '{url}/v1', price: {{input: 0.1, output: 0.2}}}}\n"
        "tools:\n  - {name: none, kind: none}\n  - {name: calculator, kind: calculator}\n"
        "cache: {enabled: false}\n"
    )
    return p


def collect_cmd(pool, out, gsm8k, *extra):
    return [sys.executable, "-m", "atlas_router", "collect", "--pool", str(pool), "--benchmark", "gsm8k",
            "--path", str(gsm8k), "--limit", "40", "--out", str(out), "--concurrency", "2", *extra]


def snapshot(out) -> dict:
    df = RecordStore(out).load()
    return {(r.query_id, r.model, r.tool): (r.answer, r.score, r.cost, r.error) for r in df.itertuples()}


def test_collect_resumes_after_sigkill(tmp_path, upstream, shared_data):
    gsm8k = shared_data / "benchmarks" / "gsm8k" / "test.jsonl"
    pool = pool_file(tmp_path, upstream)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    done = subprocess.run(collect_cmd(pool, clean, gsm8k, "--json"), capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    summary = json.loads(done.stdout)
    assert summary["added"] == 160
    reference = snapshot(clean)
    assert len(reference) == 160
    assert sorted(p["pair"] for p in summary["pairs"]) == ["good@@calculator", "good@@none", "noisy@@calculator", "noisy@@none"]
    assert all(p["n"] == 40 and p["errors"] == 0 for p in summary["pairs"])
    cheap = next(p for p in summary["pairs"] if p["pair"] == "noisy@@none")
    dear = next(p for p in summary["pairs"] if p["pair"] == "good@@none")
    assert dear["cost"] > 5 * cheap["cost"]  # prices flow into record costs

    proc = subprocess.Popen(collect_cmd(pool, killed, gsm8k), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(killed.glob("part-*.parquet")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 1.0))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = snapshot(killed)
    assert 0 < len(partial) < 160, f"kill landed outside the run ({len(partial)} rows)"

    rerun = subprocess.run(collect_cmd(pool, killed, gsm8k, "--json"), capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert json.loads(rerun.stdout)["added"] == 160 - len(partial)
    resumed = snapshot(killed)
    assert resumed == reference  # no duplicate, no missing row, same values
    assert len(RecordStore(killed).load()) == 160


def test_collect_on_local_ray_matches_local_run(tmp_path, upstream, shared_data):
    gsm8k = shared_data / "benchmarks" / "gsm8k" / "test.jsonl"
    pool = pool_file(tmp_path, upstream)
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    base = [*collect_cmd(pool, local, gsm8k)]
    base[base.index("40")] = "12"
    assert subprocess.run(base, capture_output=True, timeout=300).returncode == 0
    cmd = [*collect_cmd(pool, on_ray, gsm8k, "--ray", "local")]
    cmd[cmd.index("40")] = "12"
    proc = subprocess.run(cmd, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert snapshot(on_ray) == snapshot(local)
    assert len(snapshot(on_ray)) == 48


def test_collect_bad_pairs_is_one_line_error(tmp_path, upstream, shared_data):
    gsm8k = shared_data / "benchmarks" / "gsm8k" / "test.jsonl"
    proc = subprocess.run(collect_cmd(pool_file(tmp_path, upstream), tmp_path / "x", gsm8k, "--pairs", "gpt@@none"),
                          capture_output=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == "error: pair 'gpt@@none' matches nothing in the pool"


def test_ray_jobs_carry_their_images_and_come_back_by_index():
    """The Ray worker (run here in-process, as Ray would call it) gets each job's images and answers by job
    index: image benchmarks repeat one question over many images, so the question cannot be the key."""
    from atlas_router.core.images import load_image
    from atlas_router.records.collect import _ray_worker
    from support.scenes import counting_scene
    from support.stub_upstream import create_stub_upstream

    img = load_image(counting_scene(3).image)
    with running_server(create_stub_upstream()) as url:
        config = {"models": [{"name": "echo", "backend": "openai", "endpoint": f"{url}/v1", "vision": True,
                              "max_retries": 0}],
                  "tools": [{"name": "none", "kind": "none"}]}
        out = _ray_worker(config, [(7, "echo", "none", "How many dots?", (img,)),
                                   (3, "echo", "none", "How many dots?", ())])
    assert [i for i, _ in out] == [7, 3]
    with_image, without = out[0][1], out[1][1]
    assert not with_image["error"] and "image_url" in with_image["response"]
    assert not without["error"] and "image_url" not in without["response"]
