"""Learner notebooks from solution notebooks, and scoring of submitted notebooks.

The solution notebooks in ``notebooks/solutions/`` are the single source of truth. Answers sit
between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines (the markers nbgrader and
otter-grader use); `make_learner` replaces each such block by ``raise NotImplementedError`` at the
same indentation and clears outputs. In Markdown cells the block becomes "*Your answer here.*"

Command line:
    course-make-learner [--check]        regenerate notebooks/*.ipynb (or fail if out of date)
    course-grade NOTEBOOK [--out F.json]  execute a submitted notebook, write points as JSON
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

from .core import GRADE_FILE_ENV, STRICT_ENV, get_exercise

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError  # your code here"
MARKDOWN_STUB = "*Your answer here.*"
CHECK_CALL = re.compile(r"""check\(\s*["']([\w.]+)["']""")


def strip_solutions(source: str, stub: str = STUB) -> str:
    """Replace every BEGIN/END SOLUTION block of a cell's source by `stub`, kept indented."""
    out, inside = [], False
    for line in source.splitlines():
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"nested '{BEGIN}' in:\n{source}")
            inside = True
            out.append(line[: len(line) - len(line.lstrip())] + stub)
        elif marker == END:
            if not inside:
                raise ValueError(f"'{END}' without '{BEGIN}' in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{BEGIN}' without '{END}' in:\n{source}")
    return "\n".join(out)


def make_learner(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The learner version of a solution notebook: answers stubbed, outputs cleared."""
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == "markdown":
            cell.source = strip_solutions(cell.source, MARKDOWN_STUB)
            cell.source = cell.source.replace("notebooks/solutions/", "notebooks/")
        cell.metadata.pop("execution", None)
    return nb


def learner_path(solution_path: Path) -> Path:
    """``notebooks/solutions/NN_name.ipynb`` -> ``notebooks/NN_name.ipynb``."""
    return solution_path.parent.parent / solution_path.name


def sync_learner_notebooks(notebooks_dir: str | Path, check_only: bool = False) -> list[Path]:
    """Regenerate every learner notebook; return those that were (or would be) changed."""
    changed = []
    for sol in sorted(Path(notebooks_dir, "solutions").glob("*.ipynb")):
        text = nbformat.writes(make_learner(nbformat.read(sol, as_version=4))) + "\n"
        target = learner_path(sol)
        if not target.exists() or target.read_text() != text:
            changed.append(target)
            if not check_only:
                target.write_text(text)
    return changed


def exercises_in(nb: nbformat.NotebookNode) -> list[str]:
    """The exercise ids a notebook checks, in order of appearance."""
    ids = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            ids += [i for i in CHECK_CALL.findall(cell.source) if i not in ids]
    return ids


def grade_notebook(path: str | Path, *, profile: str = "smoke", timeout: int = 600) -> dict:
    """Execute a submitted notebook in a fresh kernel and collect the points of its exercises.

    Cells that raise do not stop the run; an exercise whose check never ran scores 0.
    """
    from nbclient import NotebookClient  # imported here: only grading needs it

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    expected = exercises_in(nb)
    with tempfile.TemporaryDirectory() as tmp:
        grade_file = Path(tmp, "grades.json")
        env = {**os.environ, "COURSE_PROFILE": profile, "COURSE_STATIC": "1",
               GRADE_FILE_ENV: str(grade_file), STRICT_ENV: "0"}
        client = NotebookClient(nb, timeout=timeout, allow_errors=True, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent.resolve())}})
        client.execute(env=env)      # keyword arguments reach the kernel manager's start
        recorded = json.loads(grade_file.read_text()) if grade_file.exists() else {}
    exercises = {}
    for ex_id in expected:
        ex = get_exercise(ex_id)
        exercises[ex_id] = recorded.get(ex_id, {
            "exercise": ex_id, "title": ex.title, "status": "not run", "points": 0,
            "max_points": ex.max_points, "details": []})
    return {"notebook": path.name, "profile": profile, "exercises": exercises,
            "total": sum(e["points"] for e in exercises.values()),
            "max_total": sum(e["max_points"] for e in exercises.values())}


# ----------------------------------------------------------------------- CLIs
def make_learner_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate learner notebooks from solutions.")
    parser.add_argument("--notebooks", default="notebooks", help="folder with solutions/ inside")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a learner notebook is out of date")
    args = parser.parse_args(argv)
    if not Path(args.notebooks, "solutions").is_dir():
        parser.error(f"--notebooks: no solutions/ folder in {args.notebooks!r}")
    changed = sync_learner_notebooks(args.notebooks, check_only=args.check)
    for path in changed:
        print(("out of date: " if args.check else "wrote ") + str(path))
    if args.check and changed:
        print("Run `course-make-learner` and commit the learner notebooks.")
        return 1
    return 0


def grade_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute a notebook and score its exercises.")
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--out", type=Path, help="JSON file to write (default: print only)")
    parser.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "gpu"))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        parser.error(f"notebook: no such file {str(args.notebook)!r}")
    report = grade_notebook(args.notebook, profile=args.profile, timeout=args.timeout)
    for ex in report["exercises"].values():
        print(f"{ex['exercise']:28s} {ex['points']:3d}/{ex['max_points']:<3d} {ex['status']}")
    print(f"{'total':28s} {report['total']:3d}/{report['max_total']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(make_learner_main())
