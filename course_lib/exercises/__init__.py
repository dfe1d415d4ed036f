"""The graded exercises of every notebook; importing this package registers them all.

One module per notebook; exercise ids start with the notebook number ("00.gaussian_kl").
"""
from . import toolkit  # noqa: F401  (00 Toolkit)
