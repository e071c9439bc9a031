"""Outputs of the self-modifying demo: width accounting from the change log, the accuracy plot
and the side-by-side summary table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

KIND_COLOURS = {"prune": "tab:red", "merge": "tab:purple", "fold": "tab:purple",
                "expand": "tab:green"}  # fmt: skip


def widths_from_log(initial: dict[str, int], changes: Sequence[Any]) -> dict[str, int]:
    """Replay the change log on the initial widths: each entry removes its ``removed_ids``
    (pruned or merged away) from its layer and adds its ``added_ids``. Valid for layers that
    are not coupled to others (an entry of a coupled group lists the IDs of every member).
    Entries of trials that were rolled back are skipped."""
    widths = dict(initial)
    for entry in changes:
        if getattr(entry, "trial", None) == "rolled_back":
            continue  # a refused trial was undone: its entry records what was tried
        widths[entry.layer] += len(entry.added_ids) - len(entry.removed_ids)
    return widths


def plot_accuracy(
    name: str,
    curve: Sequence[float],
    fixed: Sequence[float],
    params: Sequence[int],
    surgeries: Sequence[dict[str, Any]],
    path: Path,
) -> Path:
    """Test accuracy per epoch (self-modifying and fixed), parameters on a second axis, and a
    mark per surgery (accuracy right before and right after it)."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    epochs = list(range(len(curve)))  # the engine's epoch numbers (0-based)
    ax.plot(epochs, [100 * a for a in curve], marker="o", ms=3, label="self-modifying")
    if fixed:
        ax.plot(epochs, [100 * a for a in fixed], ls="--", color="grey", label="fixed architecture")
    for s in surgeries:
        kind = max(s["actions"], key=s["actions"].get)
        ax.axvline(s["epoch"], color=KIND_COLOURS.get(kind, "grey"), ls=":", lw=1)
        ax.plot([s["epoch"]], [100 * s["after"]], marker="x", color="black", ms=6)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{name}: accuracy while it changes")
    ax.set_ylim(max(0.0, 100 * min([*curve, *fixed]) - 5), 100.5)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.step(epochs, params, where="post", color="tab:orange", alpha=0.7, label="parameters")
    twin.set_ylabel("parameters")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def write_summary_table(summaries: Sequence[dict[str, Any]], path: Path) -> str:
    """A markdown table of the runs (also written to ``path``)."""
    rows = [
        "| model | widths before → after | parameters | actions | test acc. | fixed model |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        widths = ", ".join(
            f"{k} {s['initial_widths'][k]}→{s['final_widths'][k]}" for k in s["final_widths"]
        )
        actions = ", ".join(f"{n} {k}" for k, n in sorted(s["actions"].items())) or "none"
        fixed = s["test_accuracy"]["fixed_architecture"]
        rows.append(
            f"| {s['model']} | {widths} | {s['parameters']['initial']} → "
            f"{s['parameters']['final']} | {actions} | {100 * s['test_accuracy']['final']:.1f} % "
            f"| {'—' if fixed is None else f'{100 * fixed:.1f} %'} |"
        )
    text = "\n".join(rows) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
