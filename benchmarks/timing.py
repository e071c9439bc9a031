"""Interleaved timing for the benchmarks: blocks of work timed back to back, ratios per repeat.

Each repeat runs every variant once, in an order that rotates from one repeat to the next, so
slow drifts of the machine (thermal, other processes) hit all variants alike. A variant's cost
is then taken as its time divided by the baseline's time *in the same repeat*, and the median
and inter-quartile range of those ratios are reported; absolute times are context only.

>>> t = interleave({"off": lambda: 1.0, "on": lambda: 1.5}, repeats=3)
>>> t["on"], summarize(ratios(t, "on"))["median"]
([1.5, 1.5, 1.5], 1.5)
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds ``fn()`` takes, with the garbage collector off and the device synchronised."""
    gc.collect()
    gc.disable()
    try:
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - t0
    finally:
        gc.enable()


def interleave(blocks: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every block (which returns its own elapsed seconds) once per repeat, rotating the
    order each repeat; returns the times per variant in repeat order."""
    names = list(blocks)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(blocks[name]())
    return times


def ratios(times: Mapping[str, list[float]], variant: str, baseline: str = "off") -> list[float]:
    """``variant / baseline`` per repeat."""
    return [v / b for v, b in zip(times[variant], times[baseline])]


def summarize(values: list[float]) -> dict[str, float]:
    """Median, quartiles (inclusive method) and IQR."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {"median": statistics.median(values), "q1": q1, "q3": q3, "iqr": q3 - q1}


def spread(values: list[float]) -> float:
    """``q3 / q1``: how steady a series of block times was (1.0 = perfectly steady)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 / q1
