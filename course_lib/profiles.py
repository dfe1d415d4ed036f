"""Run profiles: one switch that sets the size of every training run and sampler.

- ``smoke``: CI. Every notebook end to end in well under a minute on 2 CPU cores.
- ``cpu``: a laptop without a GPU. A few minutes per notebook, good 2-D results.
- ``gpu``: Colab or a workstation GPU. Full quality.

The profile is chosen by, in order: the ``profile`` argument, the ``COURSE_PROFILE``
environment variable, and the device (CUDA or Apple MPS gives ``gpu``, else ``cpu``).
Each run states its three sizes where it is defined, e.g.
``steps = get_profile().pick(smoke=50, cpu=4000, gpu=20000)``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch

from ._checks import check_choice

PROFILES = ("smoke", "cpu", "gpu")
ENV_VAR = "COURSE_PROFILE"
T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """A run profile. ``pick`` returns the value for this profile."""

    name: str

    def __post_init__(self):
        check_choice("profile", self.name, PROFILES)

    def pick(self, smoke: T, cpu: T, gpu: T) -> T:
        """Return `smoke`, `cpu` or `gpu` according to this profile."""
        return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[self.name]

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"


def default_profile_name() -> str:
    """``gpu`` when CUDA or Apple MPS is available, else ``cpu``."""
    mps = getattr(torch.backends, "mps", None)
    if torch.cuda.is_available() or (mps is not None and mps.is_available()):
        return "gpu"
    return "cpu"


def get_profile(profile: str | Profile | None = None) -> Profile:
    """The active profile: the argument, else $COURSE_PROFILE, else by device."""
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        profile = os.environ.get(ENV_VAR, "").strip().lower() or default_profile_name()
        if profile not in PROFILES:
            raise ValueError(f"environment variable {ENV_VAR} must be one of "
                             f"{', '.join(map(repr, PROFILES))}; got {profile!r}")
    if not isinstance(profile, str):
        raise TypeError(f"profile must be a str or Profile, got {type(profile).__name__}")
    return Profile(profile)
