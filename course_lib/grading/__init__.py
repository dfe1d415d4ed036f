"""Grading: `check` in notebooks, `course-make-learner` and `course-grade` on the command line."""
from .core import ExerciseFailed, Mismatch, Result, check, exercise, get_exercise, grade

__all__ = ["ExerciseFailed", "Mismatch", "Result", "check", "exercise", "get_exercise", "grade"]
