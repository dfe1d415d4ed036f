"""MNIST diffusion quality, judged by the course's own frozen MNIST classifier.

The judge is `zoo.mnist_classifier(zoo.classifier_config(P))` (a small CNN trained by the course;
its test accuracy is printed beside the results). For samples of the course's MNIST U-Net
(`zoo.mnist_diffusion(zoo.mnist_config(P))`, loaded from notebook 06's checkpoint or trained)
from DDPM with all T = 1000 steps and DDIM (eta = 0) with 100, 50, 20 and 10 steps:

- Frechet distance (`metrics.frechet_distance`) between the judge's penultimate features of the
  samples and of held-out real test digits, beside the real-vs-real floor: the distance between
  two disjoint sets of real test digits of the same size (FD is biased upwards at small N, the
  floor shows by how much);
- mean confidence (the judge's largest class probability) and the class histogram.
"""
from __future__ import annotations

from typing import Any

import torch

from course_lib import diffusion, metrics, zoo
from course_lib.data.mnist import load_mnist, mnist_source
from course_lib.profiles import Profile

from .common import table, timer

CLIP_X0 = 1.0     # images live in [-1, 1]: the samplers clip their x0 predictions (`clipped_eps`)


def samplers(P: Profile) -> dict[str, dict[str, Any]]:
    steps = P.pick(smoke=(5, 2), cpu=(100, 50, 20, 10), gpu=(100, 50, 20, 10))
    out = {"DDPM, 1000 steps": dict(kind="ddpm")} if not P.is_smoke else {}
    out.update({f"DDIM, {n} steps": dict(kind="ddim", n_steps=n) for n in steps})
    return out


@torch.no_grad()
def judge_stats(judge, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """The judge's penultimate features (N, H) and class probabilities (N, 10) of images x."""
    device = next(judge.parameters()).device
    feats, probs = [], []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(device)
        feats.append(judge.features(xb).double().cpu())
        probs.append(judge(xb).softmax(1).double().cpu())
    return torch.cat(feats), torch.cat(probs)


def run(P: Profile, device: torch.device) -> dict[str, Any]:
    judge = zoo.mnist_classifier(zoo.classifier_config(P), device=device, progress=False).to(device)
    model = zoo.mnist_diffusion(zoo.mnist_config(P), device=device, progress=False)
    x_test, y_test = load_mnist("test", scale="pm1")
    n = min(P.pick(smoke=32, cpu=400, gpu=5000), len(x_test) // 2)
    feats_test, probs_test = judge_stats(judge, x_test)
    judge_acc = (probs_test.argmax(1) == y_test).double().mean().item()
    real_a, real_b = feats_test[:n], feats_test[n:2 * n]
    floor = metrics.frechet_distance(real_b, real_a)
    rows = []
    for name, spec in samplers(P).items():
        gen = torch.Generator(device).manual_seed(0)
        with timer(device) as seconds:
            if spec["kind"] == "ddpm":
                x = diffusion.ddpm_sample(model.eps_fn, (n, 1, 28, 28), model.schedule, generator=gen,
                                          device=device, clip_x0=CLIP_X0)
            else:
                x = diffusion.ddim_sample(model.eps_fn, (n, 1, 28, 28), model.schedule,
                                          n_steps=spec["n_steps"], generator=gen, device=device,
                                          clip_x0=CLIP_X0)
        sample_s = seconds()
        feats, probs = judge_stats(judge, x.clamp(-1, 1))
        rows.append(dict(sampler=name, fd=metrics.frechet_distance(feats, real_a),
                         confidence=probs.max(1).values.mean().item(),
                         histogram=torch.bincount(probs.argmax(1), minlength=10).tolist(),
                         sample_s=sample_s))
        rows[-1]["fd_over_floor"] = rows[-1]["fd"] / floor
        print(f"  {name:18s} FD {rows[-1]['fd']:8.2f} ({rows[-1]['fd_over_floor']:.2f}x the floor), "
              f"{sample_s:.0f} s", flush=True)
    ddpm = next((r for r in rows if r["sampler"].startswith("DDPM")), None)
    ddim50 = next((r for r in rows if r["sampler"] == "DDIM, 50 steps"), None)
    return dict(source=mnist_source(), n=n, judge_test_accuracy=judge_acc, n_judge_test=len(y_test),
                real_confidence=probs_test.max(1).values.mean().item(), fd_floor=floor, clip_x0=CLIP_X0,
                model=dict(base_channels=model.config.base_channels, steps=model.config.steps,
                           parameters=sum(p.numel() for p in model.model.parameters())),
                runs=rows,
                ddim50_over_ddpm=(ddim50["fd"] / ddpm["fd"]) if ddpm and ddim50 else None)


def report(result: dict[str, Any]) -> str:
    rows = [(r["sampler"], r["fd"], r["fd_over_floor"], r["confidence"], " ".join(map(str, r["histogram"])),
             r["sample_s"]) for r in result["runs"]]
    m = result["model"]
    lines = [table(f"MNIST diffusion ({m['parameters'] / 1e6:.2f}M-parameter U-Net, {m['steps']} training steps, "
                   f"{result['source']}): {result['n']} samples judged by the course's classifier "
                   f"({100 * result['judge_test_accuracy']:.1f}% on {result['n_judge_test']} test digits)",
                   ["sampler", "FD", "FD/floor", "confidence", "class histogram 0-9", "sample s"], rows),
             f"real-vs-real floor: FD {result['fd_floor']:.2f}; real digits' mean confidence "
             f"{result['real_confidence']:.3f}"]
    if result["ddim50_over_ddpm"] is not None:
        lines.append(f"DDIM 50 / DDPM 1000 FD: {result['ddim50_over_ddpm']:.2f}")
    return "\n".join(lines)
