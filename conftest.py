"""Test-suite settings: the smoke profile, static widget renders, strict grading of solutions.

nbval runs each notebook in its own kernel, which inherits this process's environment when it
starts; `pytest_runtest_setup` (run before the notebook's kernel starts) turns strict grading on
for the solution notebooks and off for the learner notebooks, whose exercises are stubs.
"""
import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "smoke")
os.environ["COURSE_STATIC"] = "1"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.path.suffix == ".ipynb":
        os.environ["COURSE_STRICT"] = "1" if item.path.parent.name == "solutions" else "0"
