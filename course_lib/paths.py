"""Where the course keeps downloaded data and trained checkpoints.

In a checkout of the course (the package sits next to ``notebooks/``) that is ``<repo>/data``;
installed elsewhere (Colab) it is ``./data`` under the working directory. The environment
variable ``COURSE_DATA`` overrides both.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "COURSE_DATA"


def data_dir() -> Path:
    """The course's data folder, created if missing."""
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser()
    else:
        repo = Path(__file__).resolve().parents[1]
        path = repo / "data" if (repo / "notebooks").is_dir() else Path.cwd() / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path
