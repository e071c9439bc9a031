"""Shared test configuration: hypothesis profiles and deterministic torch settings."""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=600)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Tests use tiny models: one thread is faster than two (no OpenMP sync) and deterministic.
torch.set_num_threads(1)
