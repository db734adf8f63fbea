"""Training curves from ``metrics.jsonl`` as one PNG (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = [
    ("reward", ["reward", "reward_fmt", "reward_out", "reward_sel"]),
    ("format-valid rate / accuracy", ["format_valid", "accuracy"]),
    ("KL to reference", ["kl"]),
    ("entropy", ["entropy"]),
    ("value loss", ["value_loss"]),
    ("routes per query", ["routes_per_query"]),
    ("cost per query", ["cost_per_query"]),
    ("tokens per second", ["tokens_per_s"]),
]


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def plot_metrics(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw every logged curve against the step (held-out evaluations beside the training accuracy);
    None when there is nothing to draw yet."""
    every = read_metrics(metrics_path)
    rows = [r for r in every if r.get("kind", "train") == "train"]
    held_out = [r for r in every if r.get("kind") == "eval"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    fig, axes = plt.subplots(2, cols, figsize=(4 * cols, 6.5))
    steps = [r["step"] for r in rows]
    for ax, (title, keys) in zip(axes.flat, PANELS):
        for key in keys:
            ys = [r.get(key) for r in rows]
            if any(y is not None for y in ys):
                ax.plot(steps, [float("nan") if y is None else y for y in ys], label=key, linewidth=1.2)
        if title.endswith("accuracy") and held_out:
            ax.plot([r["step"] for r in held_out], [r["accuracy"] for r in held_out], "o-", markersize=3,
                    label="held-out accuracy (greedy)", linewidth=1.2)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(keys) > 1:
            ax.legend(fontsize=6)
    fig.tight_layout()
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
