"""Wall time of each solution notebook, executed top to bottom in a fresh kernel.

Runs ``notebooks/solutions/NN_*.ipynb`` with nbclient (what ``jupyter nbconvert --execute``
uses) in the chosen profile, with a fresh data folder (so training is included) unless
``--keep-data`` reuses the course's own, and records the seconds and whether every cell ran.
Notebooks run in order, so later ones load what earlier ones trained, as for a learner.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from course_lib.profiles import Profile

from .common import table

SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"


def run(P: Profile, only: list[str] | None = None, keep_data: bool = False,
        save: str | Path | None = None, folder: str | Path = SOLUTIONS) -> dict[str, Any]:
    """Execute the solution notebooks (those whose names start with an entry of `only`, or all)
    in profile `P`; with `save`, write each executed notebook, outputs included, into that folder."""
    import nbformat
    from nbclient import NotebookClient

    folder = Path(folder)
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    data = None if keep_data else tempfile.mkdtemp(prefix="course-bench-data-")
    env = {"COURSE_PROFILE": P.name, **({"COURSE_DATA": data} if data else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                      # the kernel inherits this environment
    rows = []
    try:
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, timeout=3600, kernel_name="python3",
                                    resources={"metadata": {"path": str(folder)}})
            start, error = time.perf_counter(), None
            try:
                client.execute()
            except Exception as exc:             # a failing cell: record it, go on
                error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
            if save is not None:
                Path(save).mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, Path(save) / path.name)
            rows.append(dict(notebook=path.stem, seconds=time.perf_counter() - start, ok=error is None,
                             error=error))
            print(f"  {path.stem:28s} {rows[-1]['seconds']:7.1f} s {'ok' if error is None else error}",
                  flush=True)
    finally:
        if data is not None:
            shutil.rmtree(data, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return dict(profile=P.name, fresh_data=not keep_data, runs=rows)


def report(result: dict[str, Any]) -> str:
    rows = [(r["notebook"], r["seconds"], "ok" if r["ok"] else r["error"]) for r in result["runs"]]
    data = "from a fresh data folder" if result["fresh_data"] else "with the existing data folder"
    return table(f"solution notebooks executed in the {result['profile']} profile, {data}",
                 ["notebook", "seconds", "result"], rows)
