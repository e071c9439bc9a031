"""Plain-text reports on a ``StatsSnapshot``: activations, layers, redundancy, activity ranking.

Every function reads plain snapshot data only, so it works the same on a live engine's
``snapshot()`` and on a snapshot loaded from disk. Computation is vectorised; Python loops only
format rows, and long tables are capped.

>>> import torch
>>> from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
>>> from engine.stats import CoMoments, Moments
>>> x = torch.tensor([[0.0, 1.0, 3.0, 2.0], [0.0, 2.0, 5.0, 1.0], [0.0, 4.0, 9.0, 3.0]])
>>> fc = LayerSnapshot("fc", "Linear", [7, 8, 9, 10], Moments.from_samples(x),
...                    CoMoments.from_samples(x))  # unit 0 never fires; unit 2 = 2·unit 1 + 1
>>> snap = StatsSnapshot({"fc": fc})
>>> for line in layer_summary_report(snap).splitlines()[6:10]:
...     print(line)
Layer  Type    Total  Dead  Dead %  Mean firing  Samples
--------------------------------------------------------
fc     Linear  4      1     25.0%   0.750        3
TOTAL          4      1     25.0%   0.750
>>> [(p["neuron_ids"], round(p["alpha"], 6), round(p["beta"], 6))
...  for p in redundant_pairs(snap, threshold=0.9)["fc"]]
[((8, 9), 2.0, 1.0)]
>>> print(activity_ranking(snap, top=1).splitlines()[-1])
1     7          fc     0          0.0000       0.0000   0.0000
>>> text = full_report(snap, top=5, threshold=0.95)  # every section; save_report writes it
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from engine.errors import ConfigurationError
from engine.io import atomic_write_text
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot

RULE = "=" * 80


def _num(v: float, digits: int = 4) -> str:
    return f"{round(v, digits) + 0.0:.{digits}f}" if math.isfinite(v) else "-"  # no "-0.0000"


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _short(values: list[Any], cap: int = 32) -> str:
    more = f" … ({len(values)} in all)" if len(values) > cap else ""
    return f"[{', '.join(str(v) for v in values[:cap])}]{more}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, widths fitted to the content."""
    rows = [list(r) + [""] * (len(headers) - len(r)) for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    line = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return [fmt.format(*headers).rstrip(), line] + [fmt.format(*r).rstrip() for r in rows]


def _section(title: str, body: list[str]) -> str:
    return "\n".join([title, RULE, *body])


_STATS = dict(  # column key -> LayerSnapshot attribute
    mean="mean", variance="variance", std="std", min="minimum", max="maximum",
    mean_abs="mean_abs", firing="firing_rate",
)  # fmt: skip


def _cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return torch.cat([p.to(dtype) for p in parts]) if parts else torch.zeros(0, dtype=dtype)


def _flat(snapshot: StatsSnapshot) -> dict[str, torch.Tensor]:
    """Every unit of every layer as flat columns (one entry per unit, tracking order)."""
    layers = list(snapshot.layers.values())
    sizes = torch.tensor([lay.num_units for lay in layers], dtype=torch.long)
    layer = torch.repeat_interleave(sizes)  # layer index of every unit
    cols = {
        "id": _cat([torch.tensor(lay.neuron_ids, dtype=torch.long) for lay in layers], torch.long),
        "layer": layer,
        "local": torch.arange(len(layer)) - (torch.cumsum(sizes, 0) - sizes)[layer],
        "count": torch.tensor([lay.count for lay in layers], dtype=torch.long)[layer],
        "dead": _cat([lay.dead for lay in layers], torch.bool),
    }
    for key, attr in _STATS.items():
        cols[key] = _cat([getattr(lay, attr) for lay in layers], torch.float64)
    return cols


def activation_summary(snapshot: StatsSnapshot, limit: int | None = None) -> str:
    """One row per neuron: mean, variance, std, min, max, mean |a|, firing rate, dead, samples.

    ``limit`` caps the number of rows (the rest is counted in a last line).

    Example (``snap`` as in the module docstring)::

        activation_summary(snap, limit=1).splitlines()[-1]  # '… 3 more neurons not shown …'
    """
    cols = _flat(snapshot)
    names, total = list(snapshot.layers), len(cols["id"])
    shown = total if limit is None else max(0, min(limit, total))
    values = {k: v[:shown].tolist() for k, v in cols.items()}
    keys = ("mean", "variance", "std", "min", "max", "mean_abs", "firing")
    rows = [
        [str(values["id"][r]), names[values["layer"][r]], str(values["local"][r])]
        + [_num(values[k][r]) for k in keys]
        + ["DEAD" if values["dead"][r] else "", str(values["count"][r])]
        for r in range(shown)
    ]
    headers = ["Neuron ID", "Layer", "Local idx", "Mean", "Variance", "Std", "Min", "Max"]
    body = _table([*headers, "Mean|a|", "Firing rate", "Dead", "Samples"], rows)
    if shown < total:
        body.append(f"… {total - shown} more neurons not shown (limit={limit})")
    return _section("ACTIVATION STATISTICS SUMMARY", body)


def layer_summary_report(snapshot: StatsSnapshot) -> str:
    """Per-layer units, dead units, dead %, mean firing rate; totals; observation points; and
    the local indices of dead units.

    Example (``snap`` as in the module docstring)::

        layer_summary_report(snap).splitlines()[-2]  # '  Local indices: [0]'
    """
    counts = sorted(set(snapshot.samples_seen.values())) or [0]
    seen = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}..{counts[-1]} (varies by layer)"
    rows, units, dead, fired, fire_sum = [], 0, 0, 0, 0.0
    for name, layer in snapshot.layers.items():
        s = layer.summary()
        rate = math.nan if s["mean_firing_rate"] is None else s["mean_firing_rate"]
        units, dead = units + s["units"], dead + s["dead"]
        if math.isfinite(rate):
            fired, fire_sum = fired + s["units"], fire_sum + rate * s["units"]
        row = [name, layer.module_type, str(s["units"]), str(s["dead"])]
        rows.append([*row, _pct(s["dead"], s["units"]), _num(rate, 3), str(layer.count)])
    total_rate = _num(fire_sum / fired if fired else math.nan, 3)
    rows.append(["TOTAL", "", str(units), str(dead), _pct(dead, units), total_rate, ""])
    headers = ["Layer", "Type", "Total", "Dead", "Dead %", "Mean firing", "Samples"]
    body = [
        f"Samples processed: {seen}",
        f"Firing threshold: activation > {snapshot.firing_threshold:g}",
        "",
        "LAYER SUMMARY:",
        *_table(headers, rows),
        "",
        "OBSERVATION POINTS:",
        *_observations(snapshot),
        "",
        "DEAD NEURONS DETAILS:",
    ]
    for name, layer in snapshot.layers.items():
        local = torch.nonzero(layer.dead).flatten().tolist()
        if local:
            body.append(f"{name}: {len(local)} dead neuron{'s' if len(local) > 1 else ''}")
            body.append(f"  Local indices: {_short(local)}")
            body.append(f"  Neuron IDs:    {_short([layer.neuron_ids[i] for i in local])}")
    if not dead:
        body.append("No dead neurons.")
    return _section("DATASET-LEVEL NEURON ANALYSIS REPORT", body)


def _observations(snapshot: StatsSnapshot) -> list[str]:
    """Where each layer is observed: hook module, activation chain, replayed steps, fallback."""

    def join(v: Any) -> str:
        return ", ".join(str(x) for x in v) if v else "-"

    rows, notes = [], []
    for name, o in ((n, lay.observation) for n, lay in snapshot.layers.items()):
        rows.append([name, str(o.get("hook", "?")), join(o.get("chain")), join(o.get("replayed"))])
        if o.get("fallback"):
            notes.append(f"  {name}: fallback to the layer output ({o['fallback']})")
    return _table(["Layer", "Hook", "Chain", "Replayed"], rows) + notes


def _check_threshold(threshold: float) -> float:
    if not 0.0 <= threshold <= 1.0:
        raise ConfigurationError(f"correlation threshold must be in [0, 1], got {threshold}")
    return float(threshold)


def _layer_pairs(layer: LayerSnapshot, threshold: float) -> dict[str, torch.Tensor]:
    """Redundant pairs of one layer as tensors, sorted by |r| (strongest first)."""
    r = layer.pearson()
    upper = torch.triu(torch.ones_like(r, dtype=torch.bool), diagonal=1)
    i, j = torch.nonzero(upper & (r.abs() >= threshold), as_tuple=True)  # NaN compares False
    order = torch.argsort(r[i, j].abs(), descending=True, stable=True)
    i, j = i[order], j[order]
    alpha, beta = layer.comoments.fit_matrix()
    return {"i": i, "j": j, "r": r[i, j], "alpha": alpha[i, j], "beta": beta[i, j]}


def redundant_pairs(
    snapshot: StatsSnapshot, threshold: float = 0.9
) -> dict[str, list[dict[str, Any]]]:
    """Pairs of units with ``|Pearson r| >= threshold``, per layer with correlation state.

    Each pair: ``neuron_ids``, ``local_indices`` ``(i, j)`` with ``i < j``, ``correlation``, and
    ``alpha``/``beta`` of the least-squares fit ``a_j ≈ alpha·a_i + beta``. Layers tracked
    without correlation are absent; pairs involving a constant unit (NaN r) are ignored.

    Example (``snap`` as in the module docstring)::

        redundant_pairs(snap, 0.9)["fc"][0]["neuron_ids"]  # (8, 9): a_9 ≈ 2.0·a_8 + 1.0
    """
    threshold = _check_threshold(threshold)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, layer in snapshot.layers.items():
        if layer.comoments is None:
            continue
        p = {k: v.tolist() for k, v in _layer_pairs(layer, threshold).items()}
        ids = layer.neuron_ids
        out[name] = [
            dict(neuron_ids=(ids[i], ids[j]), local_indices=(i, j), correlation=r, alpha=a, beta=b)
            for i, j, r, a, b in zip(p["i"], p["j"], p["r"], p["alpha"], p["beta"])
        ]
    return out


def redundancy_report(snapshot: StatsSnapshot, threshold: float = 0.9, limit: int = 50) -> str:
    """Redundant pairs (strongest first, at most ``limit`` per layer) with their linear fits,
    and a per-layer summary (pairs, redundancy rate = units in a pair / units).

    Example (``snap`` as in the module docstring)::

        redundancy_report(snap, 0.95).splitlines()[8]  # 'fc  (8, 9)  (1, 2)  1.0000  2.0000  …'
    """
    threshold = _check_threshold(threshold)
    pair_rows, summary_rows, untracked, total = [], [], [], 0
    for name, layer in snapshot.layers.items():
        if layer.comoments is None:
            untracked.append(f"{name}: correlation not tracked")
            continue
        p = _layer_pairs(layer, threshold)
        n = len(p["r"])
        involved = int(torch.unique(torch.cat([p["i"], p["j"]])).numel())
        ab = p["r"].abs()
        rng = f"{_num(float(ab.min()))} - {_num(float(ab.max()))}" if n else "-"
        mean = _num(float(ab.mean())) if n else "-"
        rate = _pct(involved, layer.num_units)
        row = [name, str(layer.num_units), str(layer.comoments.n), str(n), str(involved)]
        summary_rows.append([*row, rate, rng, mean])
        total += n
        ids, v = layer.neuron_ids, {k: t[:limit].tolist() for k, t in p.items()}
        for i, j, r, a, b in zip(v["i"], v["j"], v["r"], v["alpha"], v["beta"]):
            pair_rows.append(
                [name, f"({ids[i]}, {ids[j]})", f"({i}, {j})", _num(r), _num(a), _num(b)]
            )
        if n > limit:
            pair_rows.append([name, f"… {n - limit} more pairs", "", "", "", ""])
    headers = ["Layer", "Neuron IDs", "Local idx", "Correlation", "Alpha", "Beta"]
    pairs = _table(headers, pair_rows) if pair_rows else ["No redundant pairs."]
    body = [
        f"Correlation threshold: |r| >= {threshold:g}",
        "Fit: a_j ≈ alpha·a_i + beta (least squares over every observation)",
        "",
        "REDUNDANT NEURON PAIRS:",
        *pairs,
        "",
        "REDUNDANCY BY LAYER:",
        *_table(
            ["Layer", "Units", "Samples", "Pairs", "Involved", "Rate", "|r| range", "Mean |r|"],
            summary_rows,
        ),
        *untracked,
        "",
        f"Total redundant pairs: {total}",
    ]
    return _section("NEURON CORRELATION ANALYSIS REPORT", body)


def activity_ranking(snapshot: StatsSnapshot, top: int = 10) -> str:
    """The ``top`` most and least active neurons over all layers, by firing rate (ties broken
    by mean |a|). Units of layers that saw no samples are left out.

    Example (``snap`` as in the module docstring)::

        activity_ranking(snap, top=3).splitlines()[-3]  # least active first: neuron 7
    """
    if top < 0:
        raise ConfigurationError(f"top must be ≥ 0, got {top}")
    cols = _flat(snapshot)
    keep = torch.nonzero(cols["count"] > 0).flatten()
    fire, mabs = cols["firing"][keep], cols["mean_abs"][keep]
    names = list(snapshot.layers)

    def ranked(descending: bool) -> list[list[str]]:
        order = torch.argsort(mabs, descending=descending, stable=True)
        order = order[torch.argsort(fire[order], descending=descending, stable=True)][:top]
        v = {k: t[keep[order]].tolist() for k, t in cols.items()}
        return [
            [str(r + 1), str(v["id"][r]), names[v["layer"][r]], str(v["local"][r])]
            + [_num(v[k][r]) for k in ("firing", "mean_abs", "mean")]
            for r in range(len(order))
        ]

    headers = ["Rank", "Neuron ID", "Layer", "Local idx", "Firing rate", "Mean|a|", "Mean"]
    body = [
        f"TOP {top} MOST ACTIVE NEURONS:",
        *_table(headers, ranked(True)),
        "",
        f"TOP {top} LEAST ACTIVE NEURONS (pruning candidates):",
        *_table(headers, ranked(False)),
    ]
    return _section("NEURON ACTIVITY RANKING", body)


def full_report(
    snapshot: StatsSnapshot, top: int = 10, threshold: float = 0.9, limit: int | None = 200
) -> str:
    """Everything above under one header; ``limit`` caps the per-neuron table.

    Example::

        save_report("outputs/run/report.txt", full_report(engine.snapshot(), top=5))
    """
    units = sum(layer.num_units for layer in snapshot.layers.values())
    head = [
        f"Created: {snapshot.created}",
        f"Layers: {len(snapshot.layers)}   Neurons: {units}",
        *(f"{k}: {v}" for k, v in snapshot.metadata.items()),
    ]
    parts = [
        _section("COMPREHENSIVE NEURON ACTIVITY REPORT", head),
        layer_summary_report(snapshot),
        activity_ranking(snapshot, top=top),
        redundancy_report(snapshot, threshold=threshold),
        activation_summary(snapshot, limit=limit),
    ]
    return "\n\n\n".join(parts) + "\n"


def save_report(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (parent folders are created).

    Example::

        save_report("outputs/run/report.txt", "hello")  # -> Path('outputs/run/report.txt')
    """
    return atomic_write_text(path, text if text.endswith("\n") else text + "\n")
