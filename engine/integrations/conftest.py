"""The doctests of an integration run only where its package is installed (``pytest
--doctest-modules`` imports every module of ``engine/``; without the extra, these are left
out instead of failing to import)."""

from engine.integrations.extras import available

collect_ignore_glob: list[str] = []
if not available("lightning"):
    collect_ignore_glob += ["lightning/*"]
if not available("transformers"):
    collect_ignore_glob += ["transformers.py", "hf_conv1d.py"]
if not available("tensorboard"):
    collect_ignore_glob += ["tensorboard.py"]
