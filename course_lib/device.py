"""Device choice and seeding."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from ._checks import check_choice


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: the argument if given, else CUDA, else Apple MPS, else CPU."""
    if device is not None:
        if isinstance(device, torch.device):
            return device
        if not isinstance(device, str):
            raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
        check_choice("device", device.split(":")[0], ("cpu", "cuda", "mps"))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for, but CUDA is not available here")
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (all devices); return a CPU generator seeded the same."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def describe_device(device: torch.device | None = None) -> str:
    """One line naming the device: GPU model and memory, or CPU thread count."""
    device = get_device(device)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"cuda ({p.name}, {p.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
