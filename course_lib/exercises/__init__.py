"""The graded exercises of every notebook; importing this package registers them all.

One module per notebook (``toolkit`` for 00, ...); exercise ids start with the notebook number
("00.gaussian_kl"). Every module in this package is imported, so a new notebook's exercises
only need a new module here.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
