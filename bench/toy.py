"""2-D time-to-quality: how long a DDPM on the Gaussian-mixture oracle must train to pass the
course's quality bar, for the course's training loop and for a tutorial-style baseline.

Both train the same network (`nets.MLP`, same initial weights, same eps-loss, linear T = 1000
schedule, batch size, AdamW learning rate, cosine decay and gradient clipping) for each step count
of a ladder; each run starts from scratch, so "time to quality" is the training time of the
shortest run whose samples pass (`metrics.sample_quality(...).passes()`: every mode weight within
1.5 points, sliced Wasserstein at most 1.5x the data-vs-data floor). Sampling and evaluation are
not timed. The two differ only in how they feed and noise the data:

- course: `zoo.train_toy_diffusion` -- fresh samples drawn as one tensor per step, `q_sample`,
  fused AdamW, the loss kept on the device (`train.fit`).
- baseline: the way popular tutorials write it -- a fixed dataset in a `TensorDataset` read
  through a shuffling `DataLoader`, noise added by diffusers' `DDPMScheduler.add_noise` (0-based
  t), and diffusers' `DDPMScheduler.step` loop to sample (``clip_sample=False``: the data are
  not in [-1, 1]). Needs the optional `diffusers` package (``pip install diffusers``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
import torch.nn.functional as F

from course_lib import diffusion, metrics, zoo
from course_lib.data.mixture import make_mixture
from course_lib.nets import MLP
from course_lib.profiles import Profile

from .common import table, timer

DATASET_SIZE = 100_000     # the baseline's fixed training set (tutorials: 10k-100k points)


def ladder(P: Profile) -> tuple[int, ...]:
    """Training-step counts tried, shortest first."""
    return P.pick(smoke=(20, 40), cpu=(1000, 2000, 3000, 4000, 6000),
                  gpu=(1000, 2000, 3000, 4000, 6000, 10_000))


# --------------------------------------------------------------------------- the course
def course_run(cfg: zoo.ToyDiffusionConfig, device) -> tuple[Callable, float]:
    """Train with the course's loop; return (sample(n, generator), training seconds)."""
    with timer(device) as seconds:
        run = zoo.train_toy_diffusion(cfg, device=device, progress=False)
    train_s = seconds()

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        return diffusion.ddpm_sample(run.eps_fn, (n, 2), run.schedule, generator=generator,
                                     device=device).cpu()
    return sample, train_s


# --------------------------------------------------------------------------- the baseline
def baseline_run(cfg: zoo.ToyDiffusionConfig, device) -> tuple[Callable, float]:
    """Train the same MLP the tutorial way (DataLoader + diffusers); return (sample, seconds)."""
    from diffusers import DDPMScheduler
    from torch.utils.data import DataLoader, TensorDataset

    mixture = make_mixture(cfg.mixture)
    data = mixture.sample(DATASET_SIZE, generator=torch.Generator().manual_seed(cfg.seed + 1))
    scheduler = DDPMScheduler(num_train_timesteps=cfg.T, beta_schedule="linear", clip_sample=False)
    torch.manual_seed(cfg.seed)
    model = MLP(dim=mixture.dim, hidden=cfg.hidden, depth=cfg.depth).to(device)
    with timer(device) as seconds:
        loader = DataLoader(TensorDataset(data), batch_size=cfg.batch_size, shuffle=True,
                            drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
        step = 0
        while step < cfg.steps:
            for (x0,) in loader:
                x0 = x0.to(device)
                noise = torch.randn_like(x0)
                t = torch.randint(0, cfg.T, (len(x0),), device=device)
                loss = F.mse_loss(model(scheduler.add_noise(x0, noise, t), t.float()), noise)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                lr_sched.step()
                step += 1
                if step == cfg.steps:
                    break
    train_s = seconds()
    model.eval()

    @torch.no_grad()
    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        scheduler.set_timesteps(cfg.T)
        x = torch.randn(n, mixture.dim, generator=generator).to(device)
        for t in scheduler.timesteps:
            eps = model(x, torch.full((n,), float(t), device=device))
            x = scheduler.step(eps, t, x).prev_sample
        return x.cpu()
    return sample, train_s


def have_diffusers() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- the benchmark
def run(P: Profile, device: torch.device) -> dict[str, Any]:
    """Train both loops for every step count of `ladder(P)`; judge each run's samples."""
    cfg0 = zoo.toy_config(P)
    mixture = make_mixture(cfg0.mixture)
    n_eval = P.pick(smoke=500, cpu=10_000, gpu=10_000)
    floor = metrics.sample_quality(mixture.sample(n_eval, generator=torch.Generator().manual_seed(99)),
                                   mixture, generator=torch.Generator().manual_seed(1)).sw_floor
    runners = {"course": course_run}
    if have_diffusers():
        runners["baseline"] = baseline_run
    else:
        print("diffusers is not installed: the baseline is skipped (pip install diffusers)")
    rows = []
    for steps in ladder(P):
        cfg = dataclasses.replace(cfg0, steps=steps)
        for name, runner in runners.items():
            torch.manual_seed(0)
            sample, train_s = runner(cfg, device)
            x = sample(n_eval, torch.Generator().manual_seed(7))
            q = metrics.sample_quality(x, mixture, generator=torch.Generator().manual_seed(1),
                                       sw_floor=floor)
            rows.append(dict(loop=name, steps=steps, train_s=train_s, ms_per_step=1e3 * train_s / steps,
                             max_weight_error_pp=q.coverage.max_weight_error, sw_ratio=q.sw_ratio,
                             passes=q.passes()))
            print(f"  {name:8s} {steps:6d} steps: {train_s:6.1f} s, {q}, "
                  f"{'passes' if q.passes() else 'fails'}", flush=True)
    summary = {name: _time_to_quality([r for r in rows if r["loop"] == name]) for name in runners}
    ratio = None
    if "baseline" in summary and summary["course"] is not None:
        base = summary["baseline"]
        ratio = (base / summary["course"]) if base is not None else None
    comparison = sampler_comparison(P, device, floor, n_eval)
    return dict(config=dataclasses.asdict(cfg0), n_eval=n_eval, sw_floor=floor, runs=rows,
                time_to_quality_s=summary, baseline_over_course=ratio,
                baseline_reached=summary.get("baseline") is not None, samplers=comparison)


def sampler_comparison(P: Profile, device: torch.device, floor: float, n: int) -> dict[str, Any]:
    """DDPM (1000 steps) against DDIM (50 steps, eta = 0) for the course's own 2-D model
    (`zoo.toy_diffusion(zoo.toy_config(P))`), each judged on R sample sets from shared x_T: one
    set's SW ratio swings by about +-20%, so the means over R sets of n samples are compared;
    `floor` is the data-vs-data SW for sets of n."""
    R = P.pick(smoke=2, cpu=8, gpu=8)
    run = zoo.toy_diffusion(zoo.toy_config(P), device=device, progress=False)
    mixture = make_mixture(run.config.mixture)
    scores: dict[str, list[tuple[float, float]]] = {"DDPM, 1000 steps": [], "DDIM, 50 steps": []}
    for seed in range(10, 10 + R):
        g = torch.Generator().manual_seed(seed)
        xT = torch.randn(n, mixture.dim, generator=g).to(device)
        samples = {"DDPM, 1000 steps": diffusion.ddpm_sample(run.eps_fn, None, run.schedule, xT=xT,
                                                             generator=g),
                   "DDIM, 50 steps": diffusion.ddim_sample(run.eps_fn, None, run.schedule, n_steps=50, xT=xT)}
        for name, x in samples.items():
            q = metrics.sample_quality(x.cpu(), mixture, generator=torch.Generator().manual_seed(seed + 100),
                                       sw_floor=floor)
            scores[name].append((q.coverage.max_weight_error, q.sw_ratio))
    out = {}
    for name, pairs in scores.items():
        w, r = torch.tensor(pairs, dtype=torch.float64).T
        out[name] = dict(max_weight_error_pp=w.mean().item(), max_weight_error_se=(w.std() / R**0.5).item(),
                         sw_ratio=r.mean().item(), sw_ratio_se=(r.std() / R**0.5).item())
    return dict(sets=R, n=n, samplers=out,
                ddim50_over_ddpm_sw=out["DDIM, 50 steps"]["sw_ratio"] / out["DDPM, 1000 steps"]["sw_ratio"])


def _time_to_quality(rows: list[dict]) -> float | None:
    """Training seconds of the shortest passing run (None: no run passed)."""
    passing = [r["train_s"] for r in sorted(rows, key=lambda r: r["steps"]) if r["passes"]]
    return passing[0] if passing else None


def report(result: dict[str, Any]) -> str:
    rows = [(r["loop"], r["steps"], r["train_s"], r["ms_per_step"], r["max_weight_error_pp"],
             r["sw_ratio"], "yes" if r["passes"] else "no") for r in result["runs"]]
    out = [table(f"2-D DDPM on {result['config']['mixture']} ({result['n_eval']} samples, "
                 "DDPM 1000 steps): training time and quality",
                 ["loop", "steps", "train s", "ms/step", "max |dw| pp", "SW/floor", "bar"], rows)]
    for name, s in result["time_to_quality_s"].items():
        out.append(f"time to quality, {name}: " + (f"{s:.1f} s" if s is not None else
                                                   "not reached on the ladder"))
    if result["baseline_over_course"] is not None:
        out.append(f"baseline / course: {result['baseline_over_course']:.2f}x")
    c = result["samplers"]
    rows = [(name, f"{v['max_weight_error_pp']:.2f} +- {v['max_weight_error_se']:.2f}",
             f"{v['sw_ratio']:.3f} +- {v['sw_ratio_se']:.3f}") for name, v in c["samplers"].items()]
    out.append(table(f"\nthe course's model ({c['sets']} sample sets of {c['n']}, mean +- standard error)",
                     ["sampler", "max |dw| pp", "SW/floor"], rows))
    out.append(f"DDIM 50 / DDPM 1000 SW: {c['ddim50_over_ddpm_sw']:.3f}")
    return "\n".join(out)
