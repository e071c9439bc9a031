"""Lightning integration (extra ``lightning``): ``SelfModifyingCallback`` changes a
LightningModule's shapes mid-fit, with Lightning's optimizer, LR schedulers, loggers and
checkpoints intact; ``load_checkpoint(LitClass, path)`` rebuilds a module with a
checkpoint's shapes and weights for inference (read with ``weights_only=True``).

>>> import lightning.pytorch as pl
>>> issubclass(SelfModifyingCallback, pl.Callback)
True
"""

from engine.integrations.extras import require

require("lightning", "lightning")

from engine.integrations.lightning.callback import SelfModifyingCallback  # noqa: E402
from engine.integrations.lightning.checkpoint import (  # noqa: E402
    CHECKPOINT_KEY,
    load_checkpoint,
    read_checkpoint,
)

__all__ = ["CHECKPOINT_KEY", "SelfModifyingCallback", "load_checkpoint", "read_checkpoint"]
