"""Graded exercises: each exercise is a list of test cases worth points.

A learner writes a function and runs ``check("00.gaussian_kl", gaussian_kl)``. Every case calls
the function on inputs the notebook does not show and compares with the library's reference;
the verdict says, case by case, what passed and what went wrong (shape, value, batching, ...).

- A function that raises ``NotImplementedError`` (the stub) is "not attempted": 0 points, no crash.
- ``COURSE_STRICT=1`` makes any shortfall raise ``ExerciseFailed`` (CI runs solution notebooks so).
- ``COURSE_GRADE_FILE=path.json`` records every verdict there (used by ``course-grade``).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

STRICT_ENV, GRADE_FILE_ENV = "COURSE_STRICT", "COURSE_GRADE_FILE"


class Mismatch(Exception):
    """Raised by a test case when the learner's answer is wrong; the message says how."""


class ExerciseFailed(AssertionError):
    """Raised by `check` in strict mode when an exercise does not get full points."""


@dataclass(frozen=True)
class Case:
    """One test of an exercise: `run(fn)` raises `Mismatch` if `fn` gets it wrong."""

    kind: str                      # what is tested: "shape", "value", "batching", ...
    what: str                      # one line for the learner
    points: int
    run: Callable[[Callable], None]


@dataclass
class Exercise:
    id: str
    title: str
    cases: list[Case] = field(default_factory=list)

    def case(self, kind: str, what: str, points: int = 1):
        """Decorator adding a test case: ``@EX.case("value", "matches the reference")``."""
        def register(run: Callable[[Callable], None]) -> Callable[[Callable], None]:
            self.cases.append(Case(kind, what, points, run))
            return run
        return register

    @property
    def max_points(self) -> int:
        return sum(c.points for c in self.cases)


@dataclass
class Result:
    exercise: str
    title: str
    status: str                    # "passed", "partial", "failed" or "not attempted"
    points: int
    max_points: int
    details: list[dict] = field(default_factory=list)

    def __str__(self) -> str:
        head = f"[{self.exercise}] {self.title}: {self.points}/{self.max_points} points"
        if self.status == "not attempted":
            return head + " - not attempted (the function still raises NotImplementedError)"
        lines = [head + ("" if self.status == "passed" else f" - {self.status}")]
        for d in self.details:
            mark = "PASS" if d["passed"] else "FAIL"
            lines.append(f"  {mark} {d['kind']} ({d['points']} pt): {d['what']}")
            if not d["passed"]:
                lines.append(f"       -> {d['message']}")
        return "\n".join(lines)


REGISTRY: dict[str, Exercise] = {}


def exercise(id: str, title: str) -> Exercise:
    """Create and register an exercise; add cases with its `case` decorator."""
    if id in REGISTRY:
        raise ValueError(f"exercise id {id!r} is already registered")
    REGISTRY[id] = ex = Exercise(id, title)
    return ex


def get_exercise(exercise_id: str) -> Exercise:
    from .. import exercises  # noqa: F401  (importing registers every exercise)
    if exercise_id not in REGISTRY:
        raise ValueError(f"exercise_id must be one of {sorted(REGISTRY)}; got {exercise_id!r}")
    return REGISTRY[exercise_id]


def grade(exercise_id: str, fn: Callable) -> Result:
    """Run every case of the exercise on `fn`; never raises for a wrong or missing answer."""
    ex = get_exercise(exercise_id)
    if not callable(fn):
        raise TypeError(f"fn must be the function you wrote, got {type(fn).__name__}")
    details = []
    for case in ex.cases:
        try:
            case.run(fn)
            message, passed = "", True
        except NotImplementedError:
            return Result(ex.id, ex.title, "not attempted", 0, ex.max_points)
        except Mismatch as err:
            message, passed = str(err), False
        except Exception as err:  # the learner's code crashed: report it, don't crash
            message, passed = f"your function raised {type(err).__name__}: {err}", False
        details.append({"kind": case.kind, "what": case.what, "points": case.points,
                        "passed": passed, "message": message})
    points = sum(d["points"] for d in details if d["passed"])
    status = ("passed" if points == ex.max_points else "partial" if points else "failed")
    return Result(ex.id, ex.title, status, points, ex.max_points, details)


# ---------------------------------------------------------- helpers for cases
def seeded(seed: int) -> torch.Generator:
    """A CPU generator with a fixed seed: the hidden test inputs are the same on every run."""
    return torch.Generator().manual_seed(seed)


def expect_tensor(out, what: str) -> torch.Tensor:
    """The answer must be a tensor."""
    if not isinstance(out, torch.Tensor):
        raise Mismatch(f"{what} should be a torch.Tensor, got {type(out).__name__}")
    return out


def expect_shape(out, shape: tuple, what: str) -> torch.Tensor:
    """The answer must be a tensor of exactly this shape."""
    expect_tensor(out, what)
    if tuple(out.shape) != tuple(shape):
        raise Mismatch(f"{what} should have shape {tuple(shape)}, got {tuple(out.shape)}")
    return out


def expect_close(out, expected: torch.Tensor, what: str, atol: float = 1e-5,
                 rtol: float = 1e-4) -> None:
    """The answer must equal the reference within tolerance; say where it differs most."""
    expect_shape(out, expected.shape, what)
    out, expected = out.detach().double(), expected.detach().double()
    err = (out - expected).abs()
    bad = err > atol + rtol * expected.abs()
    if bad.any() or not torch.isfinite(out).all():
        i = int(torch.nan_to_num(err, nan=float("inf")).flatten().argmax())
        idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), out.shape)) if out.ndim else ()
        raise Mismatch(f"{what} is wrong at {int(bad.sum())} of {bad.numel()} entries; e.g. at "
                       f"index {idx} expected {expected.flatten()[i]:.6g}, got {out.flatten()[i]:.6g}")


def _record(result: Result, path: str) -> None:
    """Merge the result into the JSON grade file, atomically."""
    path = Path(path)
    record = json.loads(path.read_text()) if path.exists() else {}
    record[result.exercise] = asdict(result)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)


def check(exercise_id: str, fn: Callable) -> None:
    """Grade `fn` for the exercise and print the verdict with points."""
    result = grade(exercise_id, fn)
    print(result)
    if os.environ.get(GRADE_FILE_ENV):
        _record(result, os.environ[GRADE_FILE_ENV])
    if os.environ.get(STRICT_ENV, "") in ("1", "true", "yes") and result.status != "passed":
        raise ExerciseFailed(f"strict mode: {exercise_id} scored {result.points}/"
                             f"{result.max_points}\n{result}")
