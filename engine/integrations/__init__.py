"""Thin adapters between the engine and training frameworks (optional extras).

Nothing here is imported by ``import engine``; each integration is imported on its own and
needs its package:

- ``engine.integrations.lightning``: ``SelfModifyingCallback`` (a Lightning ``Callback``) and
  ``load_checkpoint`` (extra ``lightning``);
- ``engine.integrations.transformers``: ``SelfModifyingTrainerCallback`` for
  ``transformers.Trainer``, and Hugging Face's ``Conv1D`` (GPT-2) as a known layer type
  (extra ``transformers``);
- ``engine.integrations.tensorboard``: ``TensorBoardSummary``, per-layer scalars and
  per-neuron histograms for a ``SummaryWriter`` (extra ``tensorboard``).

``summaries`` (per-layer numbers from a snapshot) and ``architecture`` (the plans and neuron
IDs a checkpoint needs to be rebuilt) are shared by them and need no extra.
"""
