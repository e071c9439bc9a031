"""``rewrap(ddp)``: a new ``DistributedDataParallel`` around a module that surgery changed.

DDP registers its gradient buckets on the parameters it was built with, and forbids adding or
removing parameters later. After ``engine.apply(plan, optimizer)`` on every rank, the old
wrapper's autograd hooks are removed (it must not be used again) and a new wrapper is built
around the same ``ddp.module`` with the original constructor options, read off the old one:
``device_ids``, ``output_device``, ``dim``, ``broadcast_buffers`` (``forward_sync_buffers``),
``process_group`` or ``device_mesh``, the bucket size(s), ``find_unused_parameters``,
``gradient_as_bucket_view``, ``static_graph``, ``mixed_precision``,
``skip_all_reduce_unused_params``, ``batched_grad_copy``, and the registered communication
hooks. Only options the installed PyTorch accepts are passed; ``overrides`` win.

``delay_all_reduce_named_params`` names parameter objects that surgery may have replaced:
a wrapper built with it is refused (pass it again in ``overrides``).

Like the DDP constructor, ``rewrap`` is a collective (it checks and broadcasts the module's
state from rank 0): every rank must call it.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from engine.errors import ConfigurationError

__all__ = ["ddp_options", "rewrap"]

_MIB = 1024 * 1024
_COPIED = (
    "device_ids", "output_device", "dim", "find_unused_parameters", "gradient_as_bucket_view",
    "static_graph", "mixed_precision", "skip_all_reduce_unused_params", "batched_grad_copy",
)  # fmt: skip


def ddp_options(ddp: DistributedDataParallel) -> dict[str, Any]:
    """The constructor options ``ddp`` was built with, as keyword arguments of the installed
    ``DistributedDataParallel`` (see the module docstring)."""
    if not isinstance(ddp, DistributedDataParallel):
        raise ConfigurationError(
            f"rewrap expects the DistributedDataParallel wrapper, got {type(ddp).__name__}"
        )
    if getattr(ddp, "_delay_all_reduce_params", None):
        raise ConfigurationError(
            "this DDP was built with delay_all_reduce_named_params, which names parameter "
            "objects surgery may have replaced: pass delay_all_reduce_named_params=... "
            "again to rewrap(ddp, ...)"
        )
    accepted = set(inspect.signature(DistributedDataParallel.__init__).parameters)
    options = {k: getattr(ddp, k) for k in _COPIED if k in accepted and hasattr(ddp, k)}
    mesh = getattr(ddp, "device_mesh", None)
    if mesh is not None and "device_mesh" in accepted:
        options["device_mesh"] = mesh
    else:
        options["process_group"] = ddp.process_group
    caps = list(getattr(ddp, "bucket_bytes_cap_list", []) or [])
    if len(caps) > 1 and "bucket_cap_mb_list" in accepted:
        options["bucket_cap_mb_list"] = [c / _MIB for c in caps]
    else:
        options["bucket_cap_mb"] = ddp.bucket_bytes_cap / _MIB
    sync = getattr(ddp, "forward_sync_buffers", None)
    if sync is None:
        options["broadcast_buffers"] = ddp.broadcast_buffers
    elif "forward_sync_buffers" in accepted and sync:
        options["forward_sync_buffers"] = True
    else:  # buffers kept per rank: broadcast_buffers=False does not sync them at init either
        options["broadcast_buffers"] = False
    return options


def rewrap(ddp: DistributedDataParallel, **overrides: Any) -> DistributedDataParallel:
    """A new DDP around ``ddp.module`` with ``ddp``'s options (see the module docstring).

    Example (on every rank, after the same ``engine.apply``)::

        record = engine.apply(plan, optimizer)
        ddp = engine.distributed.rewrap(ddp)
    """
    options = {**ddp_options(ddp), **overrides}
    module: nn.Module = ddp.module
    hooks = list(getattr(ddp, "_comm_hooks", []))
    remove = getattr(ddp, "_remove_autograd_hooks", None)
    if remove is not None:
        remove()  # the old wrapper's reducer would otherwise still see the kept parameters
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        new = DistributedDataParallel(module, **options)
    for hook, state in hooks:
        new.register_comm_hook(state, hook)
    return new
