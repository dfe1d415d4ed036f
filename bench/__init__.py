"""The course's benchmark suite: measured speed and quality, printed as tables and written as JSON.

    python -m bench                  # every benchmark, sized by the run profile (cpu without a GPU)
    python -m bench toy vae          # some of them
    python -m bench --profile smoke  # a seconds-long dry run of every code path

Benchmarks (one module each):

- `toy`: wall time for a 2-D DDPM to reach the course's quality bar, against a baseline that
  trains the same network the way popular tutorials do (a DataLoader and diffusers' scheduler).
- `vae`: an MNIST VAE's test log-likelihood by importance sampling (K = 1000), with its time.
- `mnist`: MNIST diffusion quality judged by the course's own classifier (Frechet distance on its
  features, confidence, class histogram) for DDPM and DDIM with several step counts.
- `throughput`: training images per second of the MNIST U-Net, fast paths on and off.
"""
