"""Training throughput of the MNIST U-Net (images per second), fast paths on and off.

Each variant runs the course's own loop (`train.fit` with `diffusion.diffusion_loss`) once to warm
up, then for n1 and n2 steps, and reports (n2 - n1) * batch / (t2 - t1): the steady-state rate,
with start-up cancelled out; what is left of it is reported as "fixed s". Variants:

- course default: how `zoo` trains the U-Net -- data resident on the device (one copy before
  training), bf16 autocast on CUDA (`fit(amp=True)`); on the CPU, fp32 and channels-last
  (measured faster there).
- data on host: every batch indexed on the CPU and copied to the device (a DataLoader's way).
- fp32: autocast off (CUDA only).
- channels_last: weights and batches in NHWC order (`fit(channels_last=True)`); on the CPU the
  default, so the variant there is NCHW.
- compile: `torch.compile` of the model (`fit(compile=True)`); on the CPU only with --compile,
  since inductor's C++ compilation of the U-Net takes minutes there.
"""
from __future__ import annotations

from typing import Any

import torch

from course_lib import diffusion, zoo
from course_lib.data.mnist import load_mnist
from course_lib.profiles import Profile
from course_lib.schedules import make_schedule
from course_lib.train import fit

from .common import table, timer


def variants(device: torch.device, compile_on_cpu: bool = False) -> dict[str, dict[str, Any]]:
    """name -> options: fit's keyword arguments plus "host" (data copied from the CPU per batch).
    The first is what `zoo` trains with on this device."""
    if device.type == "cuda":
        return {"course default": dict(amp=True), "data on host": dict(amp=True, host=True),
                "fp32 (no autocast)": dict(amp=False), "channels_last": dict(amp=True, channels_last=True),
                "torch.compile": dict(amp=True, compile=True),
                "compile + channels_last": dict(amp=True, compile=True, channels_last=True)}
    out = {"course default (channels_last)": dict(channels_last=True), "NCHW (channels_last off)": dict()}
    if compile_on_cpu:
        out["torch.compile"] = dict(compile=True)
        out["compile + channels_last"] = dict(compile=True, channels_last=True)
    return out


def _fit_seconds(cfg, x: torch.Tensor, steps: int, device: torch.device, options: dict) -> float:
    options = dict(options)
    host = options.pop("host", False)
    schedule = make_schedule(cfg.schedule, cfg.T)
    model = zoo.mnist_unet(cfg)
    if host:
        g = torch.Generator().manual_seed(0)
        data = lambda n: x[torch.randint(len(x), (n,), generator=g)].to(device)   # noqa: E731
    else:
        data = x
    loss_fn = lambda m, x0: diffusion.diffusion_loss(m, x0, schedule)               # noqa: E731
    with timer(device) as seconds:
        fit(model, loss_fn, data, steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, device=device,
            progress=False, generator=torch.Generator().manual_seed(0), **options)
    return seconds()


def run(P: Profile, device: torch.device, compile_on_cpu: bool = False) -> dict[str, Any]:
    cfg = zoo.mnist_config(P)
    x, _ = load_mnist("train", scale="pm1")
    n1, n2 = P.pick(smoke=(2, 4), cpu=(5, 25), gpu=(30, 330))
    rows = []
    for name, options in variants(device, compile_on_cpu).items():
        _fit_seconds(cfg, x, n1, device, options)          # warm-up: kernels, caches, compilation
        t1 = _fit_seconds(cfg, x, n1, device, options)
        t2 = _fit_seconds(cfg, x, n2, device, options)
        per_step = (t2 - t1) / (n2 - n1) if t2 > t1 else t2 / n2     # else: a bound, overhead included
        rows.append(dict(variant=name, options=options, images_per_s=cfg.batch_size / per_step,
                         ms_per_step=1e3 * per_step, fixed_s=max(t1 - n1 * per_step, 0.0)))
        print(f"  {name:24s} {rows[-1]['images_per_s']:9.0f} images/s", flush=True)
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = r["images_per_s"] / base
    params = sum(p.numel() for p in zoo.mnist_unet(cfg).parameters())
    return dict(config=dict(base_channels=cfg.base_channels, channel_mults=list(cfg.channel_mults),
                            attention=cfg.attention, batch_size=cfg.batch_size, parameters=params),
                steps=[n1, n2], runs=rows)


def report(result: dict[str, Any]) -> str:
    c = result["config"]
    rows = [(r["variant"], r["images_per_s"], r["ms_per_step"], r["speedup"], r["fixed_s"])
            for r in result["runs"]]
    return table(f"MNIST U-Net training throughput (base {c['base_channels']}, mults {c['channel_mults']}, "
                 f"{c['parameters'] / 1e6:.2f}M parameters, batch {c['batch_size']})",
                 ["variant", "images/s", "ms/step", "vs default", "fixed s"], rows)
