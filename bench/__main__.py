"""python -m bench [toy] [vae] [mnist] [throughput] [notebooks] [--profile P] [--out DIR]

Runs the chosen benchmarks (default: toy, vae, mnist, throughput) on the GPU when there is one,
else the CPU, sized by the run profile (default: as the course picks it); prints a table for each
and writes it, with the machine it ran on, to DIR/<benchmark>-<profile>.json (default:
bench/results/). `notebooks` (not in the default set) times every solution notebook.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from course_lib import setup
from course_lib.profiles import PROFILES

from . import common

BENCHMARKS = ("toy", "vae", "mnist", "throughput", "notebooks")
DEFAULT = ("toy", "vae", "mnist", "throughput")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    p.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                   help=f"any of {', '.join(BENCHMARKS)} (default: {' '.join(DEFAULT)})")
    p.add_argument("--profile", choices=PROFILES, help="run profile (default: gpu with CUDA, else cpu)")
    p.add_argument("--out", help="folder for the JSON files (default: bench/results)")
    p.add_argument("--compile", action="store_true", help="throughput: also time torch.compile on the CPU")
    p.add_argument("--notebook", action="append", help="notebooks: only those starting with this (repeatable)")
    p.add_argument("--save", help="notebooks: write the executed notebooks into this folder")
    p.add_argument("--keep-data", action="store_true",
                   help="notebooks: reuse the course's data folder instead of a fresh one")
    args = p.parse_args(argv)
    unknown = [b for b in args.benchmarks if b not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    env = setup(profile=args.profile, seed=0)
    P, device = env.profile, env.device
    info = common.machine(device)
    print(f"bench: profile {P.name}, {common.describe(info)}", flush=True)
    for name in args.benchmarks or DEFAULT:
        print(f"\n[{name}]", flush=True)
        start = time.perf_counter()
        if name == "toy":
            from . import toy as module
            result = module.run(P, device)
        elif name == "vae":
            from . import vae as module
            result = module.run(P, device)
        elif name == "mnist":
            from . import mnist as module
            result = module.run(P, device)
        elif name == "throughput":
            from . import throughput as module
            result = module.run(P, device, compile_on_cpu=args.compile)
        else:
            from . import notebooks as module
            result = module.run(P, only=args.notebook, keep_data=args.keep_data, save=args.save)
        payload = dict(benchmark=name, profile=P.name, machine=info,
                       wall_s=time.perf_counter() - start, result=result)
        path = common.write_json(f"{name}-{P.name}", payload, args.out)
        print(module.report(result))
        print(f"({payload['wall_s']:.0f} s; written to {path})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
