"""course_lib: the library behind the course "From the ELBO to guided diffusion".

One module per concept: `profiles` (run sizes), `device` (device and seeds), `data` (2-D toys,
the Gaussian-mixture oracle, MNIST), `gaussians` (Gaussian identities), `nets` (MLP and U-Net),
`elbo` (the exact linear-Gaussian latent model), `vae` (VAEs and the two-level HVAE),
`schedules` and `diffusion` (discrete-time diffusion), `train` (`fit`, `load_or_train`),
`metrics`, `plotting`, `widgets`, `verify` (check cells), `grading` and `exercises`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .device import describe_device, get_device, seed_everything
from .paths import data_dir
from .profiles import Profile, get_profile

__version__ = "0.1.0"
#: Where the course lives; the notebooks' Colab badges and setup cells install from here.
REPO_URL = "https://github.com/vae-diffusion-course/course"


@dataclass(frozen=True)
class Setup:
    device: torch.device
    profile: Profile
    generator: torch.Generator


def setup(seed: int = 0, profile: str | None = None, device: str | None = None) -> Setup:
    """Seed everything, choose device and run profile, and print them in one line."""
    gen = seed_everything(seed)
    env = Setup(get_device(device), get_profile(profile), gen)
    print(f"course_lib {__version__} | device: {describe_device(env.device)} | "
          f"profile: {env.profile.name} | seed: {seed} | data: {data_dir()}")
    return env
