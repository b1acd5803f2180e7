"""Training curves as PNG (the plots the model cards show), written atomically."""

from __future__ import annotations

from pathlib import Path

from polycl.atomic import atomic_path


def plot_history(history: list[dict], path: str | Path, *, series: dict[str, str], ylabel: str = "",
                 title: str = "", step_key: str | None = None, hline: tuple[float, str] | None = None,
                 ylim: tuple[float, float] | None = None) -> Path:
    """One line per ``series`` key (history field -> legend label) against the epoch number; with
    ``step_key`` also each step's value (thin line; ``history[i][step_key]`` is epoch i's list);
    ``hline``: (value, label) drawn dotted (e.g. the loss of chance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if step_key:
        xs, ys = [], []
        for h in history:
            steps = h.get(step_key) or []
            xs += [h["epoch"] - 1 + (i + 1) / len(steps) for i in range(len(steps))]
            ys += steps
        if ys:
            ax.plot(xs, ys, lw=0.7, alpha=0.5, label="per step (rank 0)")
    epochs = [h["epoch"] for h in history]
    for key, label in series.items():
        ax.plot(epochs, [h[key] for h in history], "o-", ms=3, label=label)
    if hline:
        ax.axhline(hline[0], color="grey", ls=":", lw=0.8, label=hline[1])
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
