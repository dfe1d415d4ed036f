"""python -m bench.readme [--results DIR] [--readme PATH]: rewrite README.md's measured-results
section from the benchmark suite's JSON files, so its numbers are never typed in by hand.

The section lies between the lines ``<!-- bench:begin -->`` and ``<!-- bench:end -->``; each
benchmark's table appears when its JSON (``<benchmark>-<profile>.json``) exists.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import RESULTS, describe

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def load(results: Path) -> dict[str, dict[str, Any]]:
    """{"toy-cpu": payload, ...} for every JSON file in `results`."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))}


def _md(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _source(p: dict) -> str:
    return f"*{p['profile']} profile; {describe(p['machine'])}.*"


def notebooks_section(found: dict, profiles: tuple[str, ...]) -> list[str]:
    runs = {prof: {r["notebook"]: r for r in found[f"notebooks-{prof}"]["result"]["runs"]}
            for prof in profiles if f"notebooks-{prof}" in found}
    if not runs:
        return []
    names = sorted({n for r in runs.values() for n in r})
    cell = lambda r: "-" if r is None else (f"{r['seconds']:.0f} s" if r["ok"] else "failed")  # noqa: E731
    rows = [[n] + [cell(runs[prof].get(n)) if prof in runs else "not measured" for prof in profiles]
            for n in names]
    lines = ["**Notebook runtimes** (whole solution notebook, training included, in a fresh kernel; "
             "`python -m bench notebooks`)", ""] + _md(["notebook"] + [f"{p} profile" for p in profiles], rows)
    return lines + [""] + [_source(found[f"notebooks-{prof}"]) for prof in runs] + [""]


def toy_section(p: dict) -> list[str]:
    r = p["result"]
    rows = [[x["loop"], x["steps"], f"{x['train_s']:.1f}", f"{x['max_weight_error_pp']:.2f}",
             f"{x['sw_ratio']:.2f}", "yes" if x["passes"] else "no"] for x in r["runs"]]
    ttq = r["time_to_quality_s"]
    summary = "; ".join(f"{k}: " + (f"**{v:.1f} s**" if v is not None else "not reached") for k, v in ttq.items())
    if r.get("baseline_over_course") is not None:
        summary += f"; the baseline takes **{r['baseline_over_course']:.2f}x** as long"
    lines = (["**2-D time to quality** (`python -m bench toy`): a DDPM on the 8-Gaussian oracle until every "
              f"mode weight is within 1.5 points and SW within 1.5x the data floor ({r['n_eval']} DDPM samples). "
              "Time to quality: " + summary + ".", ""]
             + _md(["loop", "steps", "train s", "max weight error (pp)", "SW / floor", "passes"], rows) + [""])
    if "samplers" in r:
        c = r["samplers"]
        rows = [[name, f"{v['max_weight_error_pp']:.2f} ± {v['max_weight_error_se']:.2f}",
                 f"{v['sw_ratio']:.3f} ± {v['sw_ratio_se']:.3f}"] for name, v in c["samplers"].items()]
        lines += [f"DDPM against DDIM on the course's 2-D model (`zoo.toy_config`), mean ± standard error over "
                  f"{c['sets']} sample sets of {c['n']}: DDIM 50 / DDPM 1000 SW = **{c['ddim50_over_ddpm_sw']:.2f}**.",
                  ""] + _md(["sampler", "max weight error (pp)", "SW / floor"], rows) + [""]
    return lines + [_source(p), ""]


def vae_section(p: dict) -> list[str]:
    r, s = p["result"], p["result"]["sizes"]
    row = [f"{s['kind']} VAE ({'-'.join(map(str, s['hidden']))}), z = {s['latent_dim']}", r["source"], s["steps"], f"{r['train_s']:.0f} s",
           f"{r['test_neg_elbo']:.1f}", f"**{r['test_nll']:.1f}** ± {r['test_nll_se']:.1f}"]
    return (["**MNIST VAE** (`python -m bench vae`): test negative log-likelihood in nats, dynamically "
             f"binarised, importance sampling with K = {s['K']} on {r['n_test']} test digits.", ""]
            + _md(["model", "MNIST", "steps", "training", "-ELBO", "-log p(x)"], [row]) + ["", _source(p), ""])


def mnist_section(p: dict) -> list[str]:
    r = p["result"]
    rows = [[x["sampler"], f"{x['fd']:.2f}", f"{x['fd_over_floor']:.2f}", f"{x['confidence']:.3f}",
             f"{x['sample_s']:.0f} s"] for x in r["runs"]]
    ratio = (f" DDIM 50 / DDPM 1000 FD ratio: **{r['ddim50_over_ddpm']:.2f}**."
             if r.get("ddim50_over_ddpm") is not None else "")
    return ([f"**MNIST diffusion** (`python -m bench mnist`): {r['n']} samples of the "
             f"{r['model']['parameters'] / 1e6:.2f}M-parameter U-Net ({r['model']['steps']} training steps, "
             f"{r['source']}), judged by the course's classifier ({100 * r['judge_test_accuracy']:.1f}% "
             f"on {r['n_judge_test']} test digits). Real-vs-real FD floor **{r['fd_floor']:.2f}**.{ratio}", ""]
            + _md(["sampler", "Frechet distance", "FD / floor", "confidence", "sampling time"], rows)
            + ["", _source(p), ""])


def throughput_section(p: dict) -> list[str]:
    r, c = p["result"], p["result"]["config"]
    rows = [[x["variant"], f"{x['images_per_s']:.0f}", f"{x['speedup']:.2f}x"] for x in r["runs"]]
    return ([f"**U-Net training throughput** (`python -m bench throughput`): base {c['base_channels']}, "
             f"{c['parameters'] / 1e6:.2f}M parameters, batch {c['batch_size']}.", ""]
            + _md(["variant", "images / s", "vs default"], rows) + ["", _source(p), ""])


def render(found: dict[str, dict[str, Any]], profiles: tuple[str, ...] = ("cpu", "gpu")) -> str:
    """The section's markdown: notebook runtimes per profile, then each benchmark's table for each
    profile in `profiles` that has a JSON file."""
    lines = notebooks_section(found, profiles)
    makers = {"toy": toy_section, "vae": vae_section, "mnist": mnist_section, "throughput": throughput_section}
    for name, make in makers.items():
        for prof in profiles:
            if f"{name}-{prof}" in found:
                lines += make(found[f"{name}-{prof}"])
    return "\n".join(lines).rstrip() + "\n"


def update(readme: Path, section: str) -> None:
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{readme} must hold one {BEGIN} line followed by one {END} line")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    readme.write_text(f"{head}{BEGIN}\n{section}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(RESULTS))
    p.add_argument("--readme", default=str(README))
    p.add_argument("--profile", action="append", help="profiles to show (default: cpu and gpu)")
    args = p.parse_args(argv)
    update(Path(args.readme), render(load(Path(args.results)), tuple(args.profile or ("cpu", "gpu"))))
    print(f"updated {args.readme} from {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
