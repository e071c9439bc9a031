"""Re-estimate the running statistics of BatchNorm layers, for example after surgery.

Surgery changes what a norm layer sees: a fold rewrites the weights of the layer in front of it,
a prune removes some of its inputs. Its running mean and variance still describe the old model,
so the model in eval mode is off until training has refreshed them (``momentum`` 0.1 takes tens
of batches). :func:`recalibrate_batchnorm` resets them and re-estimates them from a few batches
with no gradient:

* only the norm layers with running statistics switch to train mode, with ``momentum=None``
  (PyTorch's cumulative average: every batch counts the same). Every other module stays in eval
  mode, so dropout is off and the statistics describe the model as it is evaluated;
* each module's mode, each norm's momentum, and on error every running buffer are restored;
* it only runs forwards. Call it outside ``engine.tracking()``, or the engine counts these
  batches too.

``torch.optim.swa_utils.update_bn`` does the same job, but it runs every module in train mode
(dropout on), sets every module back to the root's mode, and leaves the statistics reset when
the loader is empty or a forward raises.

>>> import torch, torch.nn as nn
>>> model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
>>> x = torch.randn(64, 3)
>>> recalibrate_batchnorm(model, [x[:32], x[32:]])
1
>>> expected = (model[0](x[:32]).mean(0) + model[0](x[32:]).mean(0)) / 2
>>> torch.allclose(model[1].running_mean, expected.detach(), atol=1e-6)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigurationError

__all__ = ["recalibrate_batchnorm"]


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    """Norms that keep running statistics (BatchNorm, SyncBatchNorm, tracking InstanceNorm)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
    ]


def _call(model: nn.Module, batch: Any) -> None:
    if isinstance(batch, Mapping):
        model(**batch)
    elif isinstance(batch, (tuple, list)):
        model(batch[0])  # (inputs, targets) from a data loader, as update_bn does
    else:
        model(batch)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> int:
    """Reset the running statistics of ``model``'s norms; re-estimate them from ``batches``.

    ``batches`` is an iterable of model inputs: a tensor is called as ``model(batch)``, a tuple
    or list as ``model(batch[0])`` (the ``(x, y)`` pairs of a data loader, as in PyTorch's
    ``update_bn``), a mapping as ``model(**batch)``; for anything else give
    ``forward(model, batch)``. The inputs must already be on the model's device. Returns the
    number of norm layers recalibrated (0, with no forward, when there are none).

    Raises :class:`~engine.errors.ConfigurationError` when ``batches`` is empty. On any error the
    running statistics, momenta and modes are restored as they were.
    """
    norms = _norms(model)
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    saved = {m: {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None}
             for m in norms}  # fmt: skip
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        call = forward or _call
        for batch in batches:
            call(model, batch)
            seen += 1
        if seen == 0:
            raise ConfigurationError("recalibrate_batchnorm needs at least one batch, got none")
    except BaseException:
        for m, buffers in saved.items():
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
        raise
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training  # per module: train() would recurse into the children
    return len(norms)
