"""Evaluation reports: Markdown tables plus one self-contained HTML page with the plots embedded.

Input is the evaluation JSON (``{"routers": {NAME: {accuracy, cost, calls, per_benchmark}}, "frontier":
[...], ...}``) and optionally a cluster map (2-D points with cluster labels); output is ``report.md``,
``report.html`` and the PNG plots beside them.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def frontier_plot(results: dict[str, Any]) -> bytes:
    """The cluster router's accuracy-cost frontier over a, with every router as a point."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    front = results.get("frontier") or []
    if front:
        ax.plot([p["cost"] for p in front], [p["accuracy"] for p in front], "-o", color="#1f77b4", label="atlas-cluster (a sweep)")
        for p in front[:: max(1, len(front) // 5)]:
            ax.annotate(f"a={p['alpha']:g}", (p["cost"], p["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for name, r in results["routers"].items():
        ax.scatter(r["cost"], r["accuracy"], marker="s" if name != "atlas-cluster" else "*", s=45, zorder=3)
        ax.annotate(name, (r["cost"], r["accuracy"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
    ax.set_xlabel("cost per query")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy-cost frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def benchmark_bars(results: dict[str, Any]) -> bytes:
    """Accuracy per benchmark, one bar per router."""
    plt = _plt()
    routers = list(results["routers"])
    benches = sorted({b for r in results["routers"].values() for b in r.get("per_benchmark", {})})
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(benches) + 2), 4.2))
    width = 0.8 / max(1, len(routers))
    x = np.arange(len(benches))
    for i, name in enumerate(routers):
        per = results["routers"][name].get("per_benchmark", {})
        ax.bar(x + i * width, [per.get(b, {}).get("accuracy", 0.0) for b in benches], width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, benches, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy per benchmark")
    ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def cluster_map(points: np.ndarray, labels: np.ndarray, names: list[str] | None = None) -> bytes:
    """Training queries in 2-D (PCA of their embeddings), coloured by cluster."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=22)
    ax.legend(*sc.legend_elements(), title="cluster", fontsize=7)
    ax.set_title("Query clusters (PCA of embeddings)")
    ax.set_xticks([])
    ax.set_yticks([])
    return _png(fig)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows): the overall table and one per benchmark."""
    out = []
    rows = [[n, f"{r['accuracy']:.3f}", f"{r['cost']:.3g}", f"{r.get('calls', 0):.2f}"] for n, r in results["routers"].items()]
    out.append(("All test queries", ["router", "accuracy", "cost/query", "calls/query"], rows))
    benches = sorted({b for r in results["routers"].values() for b in r.get("per_benchmark", {})})
    for b in benches:
        rows = []
        for n, r in results["routers"].items():
            o = r.get("per_benchmark", {}).get(b)
            if o:
                rows.append([n, f"{o['accuracy']:.3f}", f"{o['cost']:.3g}", f"{o.get('calls', 0):.2f}"])
        out.append((b, ["router", "accuracy", "cost/query", "calls/query"], rows))
    return out


def write_report(results: dict[str, Any], out_dir: str | Path, title: str = "atlas-router evaluation",
                 cluster_points: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Path, Path]:
    """Write report.md, report.html and the plots into ``out_dir``; returns (markdown, html) paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {"frontier.png": frontier_plot(results), "benchmarks.png": benchmark_bars(results)}
    if cluster_points is not None:
        plots["clusters.png"] = cluster_map(*cluster_points)
    for name, data in plots.items():
        (out / name).write_bytes(data)
    md = [f"# {title}", ""]
    if "alpha" in results:
        md += [f"Utility U = (1-a)·Acc - a·Cost with a = {results['alpha']}.", ""]
    for t, header, rows in tables(results):
        md += [f"## {t}", "", _md_table(header, rows), ""]
    for sample in results.get("samples", []):
        if sample is results.get("samples", [None])[0]:
            md += ["## Sample routing decisions", ""]
        e = sample["explanation"]
        md.append(f"- `{sample['question']}` → **{sample['pair']}** (cluster {e.get('cluster')}, "
                  f"distance {e.get('distance', 0):.3f}{', out of distribution' if e.get('ood') else ''})")
    md += ["", *[f"![{n}]({n})" for n in plots]]
    md_path = out / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    body = [f"<h1>{html.escape(title)}</h1>"]
    for t, header, rows in tables(results):
        body.append(f"<h2>{html.escape(t)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        body.append("</table>")
    if results.get("samples"):
        body.append("<h2>Sample routing decisions</h2><ul>")
        for s in results["samples"]:
            body.append(f"<li><code>{html.escape(s['question'])}</code> → <b>{html.escape(s['pair'])}</b> "
                        f"(cluster {html.escape(str(s['explanation'].get('cluster')))})</li>")
        body.append("</ul>")
    for name, data in plots.items():
        body.append(f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/></figure>')
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>"
    html_path = out / "report.html"
    html_path.write_text(page)
    return md_path, html_path
