"""The integrations are optional: ``import engine`` loads none of their packages, and a
missing package is a typed error naming the extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import EngineError, MissingExtraError
from engine.integrations.extras import available, require

REPO = Path(__file__).resolve().parents[2]


def test_import_engine_loads_no_integration_package():
    code = (
        "import sys, engine, engine.integrations, engine.integrations.summaries\n"
        "import engine.integrations.architecture\n"
        "loaded = [m for m in ('lightning', 'pytorch_lightning', 'transformers', 'tensorboard',"
        " 'accelerate', 'engine.integrations.lightning', 'engine.integrations.transformers',"
        " 'engine.integrations.tensorboard') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_missing_package_names_the_extra():
    assert not available("no_such_integration_package")
    with pytest.raises(MissingExtraError, match=r"pip install 'neuron-engine\[lightning\]'") as e:
        require("no_such_integration_package", "lightning")
    assert isinstance(e.value, EngineError) and isinstance(e.value, ImportError)
