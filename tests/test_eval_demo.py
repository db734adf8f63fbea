"""``atlas demo`` end to end on a pool of loopback upstreams (the real demo uses the local model and takes
minutes; the pipeline is the same): collect, fit, evaluate every router, sweep, route samples, report;
a rerun resumes from the records."""

from __future__ import annotations

import json
import subprocess
import sys

from atlas_router.records.store import RecordStore
from support.deterministic_upstream import create_deterministic_app
from support.servers import running_server


def test_demo_pipeline_end_to_end(tmp_path):
    with running_server(create_deterministic_app(delay_s=0.0)) as url:
        pool = tmp_path / "pool.yaml"
        pool.write_text(
            "models:\n"
            f"  - {{name: good, backend: openai, endpoint: '{url}/v1', price: {{input: 1.0, output: 2.0}}}}\n"
            f"  - {{name: noisy, backend: openai, endpoint: '{url}/v1', price: {{input: 0.1, output: 0.2}}}}\n"
            "tools:\n  - {name: none, kind: none}\n  - {name: calculator, kind: calculator}\n"
            "cache: {enabled: false}\n"
        )
        out = tmp_path / "demo"
        cmd = [sys.executable, "-m", "atlas_router", "demo", "--pool", str(pool), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, timeout=600)
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
        results = json.loads((out / "results.json").read_text())
        assert results["records"]["rows"] == 40 * 4
        for name in ("atlas-cluster", "random", "best-single", "oracle", "knn", "mlp", "bert", "routerdc", "zero-shot", "few-shot"):
            r = results["routers"][name]
            assert 0.0 <= r["accuracy"] <= 1.0 and r["cost"] > 0, name
            assert set(r["per_benchmark"]) == {"demo-arithmetic", "demo-facts", "demo-word-problems", "demo-common-sense"}
        oracle = results["routers"]["oracle"]["accuracy"]
        assert all(r["accuracy"] <= oracle + 1e-9 for n, r in results["routers"].items() if n.startswith("atlas-cluster (a=0)"))
        assert [p["alpha"] for p in results["frontier"]][0] == 0.0 and len(results["frontier"]) == 11
        assert len(results["samples"]) == 4 and all("@@" in s["pair"] for s in results["samples"])
        for f in ("router.atlas", "report.md", "report.html", "frontier.png", "benchmarks.png", "clusters.png"):
            assert (out / f).stat().st_size > 0, f
        assert "data:image/png;base64," in (out / "report.html").read_text()
        assert "atlas demo: test queries" in proc.stdout.decode()

        # a rerun adds nothing and gives the same evaluation
        again = subprocess.run(cmd, capture_output=True, timeout=600)
        assert again.returncode == 0
        assert len(RecordStore(out / "records").load()) == 160
        rerun = json.loads((out / "results.json").read_text())["routers"]["atlas-cluster"]
        timings = ("fit_s", "route_s")
        assert {k: v for k, v in rerun.items() if k not in timings} == \
            {k: v for k, v in results["routers"]["atlas-cluster"].items() if k not in timings}
