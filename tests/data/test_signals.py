"""The generated waveform set: deterministic, balanced enough, learnable, and checked inputs."""

from __future__ import annotations

import pytest
import torch

from engine.data import SIGNAL_CLASSES, make_signals_split
from engine.errors import DatasetError


def test_same_seed_same_data_other_seed_other_data():
    a, b = make_signals_split(3, train=300, test=50), make_signals_split(3, train=300, test=50)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = make_signals_split(4, train=300, test=50)
    assert not torch.equal(a.x_train, c.x_train)


def test_shapes_classes_and_images_axis():
    split = make_signals_split(0, train=400, test=100, length=32)
    assert split.x_train.shape == (400, 32) and split.x_test.shape == (100, 32)
    assert split.num_classes == len(SIGNAL_CLASSES) == 8
    counts = torch.bincount(split.y_train, minlength=8)
    assert counts.min() > 20  # every class is present in a fair share
    assert split.x_train.dtype == torch.float32 and torch.isfinite(split.x_train).all()
    assert make_signals_split(0, train=4, test=2, images=True).input_shape == (1, 64)


def test_classes_differ_beyond_noise():
    """A nearest-class-mean classifier on the noiseless spectra beats chance by far: the
    classes carry signal, not only noise."""
    split = make_signals_split(0, train=2000, test=500, noise=0.0)
    spectrum = lambda x: torch.fft.rfft(x).abs()  # noqa: E731  (shift-invariant)
    means = torch.stack([spectrum(split.x_train[split.y_train == c]).mean(0) for c in range(8)])
    guess = torch.cdist(spectrum(split.x_test), means).argmin(1)
    assert (guess == split.y_test).float().mean() > 0.5  # chance is 0.125


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"train": 0}, "train"), ({"length": 4}, "length"), ({"noise": float("nan")}, "noise")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(DatasetError, match=match):
        make_signals_split(0, **kwargs)
