"""Device choice, seeding and the device line."""
import random

import numpy as np
import pytest
import torch

from course_lib.device import describe_device, get_device, seed_everything
from course_lib.paths import data_dir


def test_cpu_is_chosen_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    assert describe_device().startswith("cpu (")


def test_explicit_device_and_bad_names():
    assert get_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        get_device("tpu")
    with pytest.raises(TypeError, match="device"):
        get_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()
    seed_everything(7)
    first = draw()
    g = seed_everything(7)
    assert draw() == first
    assert torch.rand(1, generator=g).item() == torch.rand(1, generator=torch.Generator().manual_seed(7)).item()
    with pytest.raises(TypeError, match="seed"):
        seed_everything(1.5)


def test_data_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d" and (tmp_path / "d").is_dir()
