"""The grader: full marks for the reference, 0 for a stub, wrong answers caught and explained."""
import json
from pathlib import Path

import nbformat
import pytest
import torch

from course_lib.gaussians import gaussian_kl, mc_estimate, reparameterize
from course_lib.grading import ExerciseFailed, check, grade
from course_lib.grading.notebooks import (exercises_in, grade_main, grade_notebook,
                                          make_learner, make_learner_main, strip_solutions,
                                          sync_learner_notebooks)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def stub(*args):
    raise NotImplementedError


@pytest.mark.parametrize("ex_id, reference", [("00.gaussian_kl", gaussian_kl),
                                              ("00.reparameterize", reparameterize),
                                              ("00.mc_estimate", mc_estimate)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 3
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0
    assert "not attempted" in str(empty)


def test_unbatched_kl_is_caught_and_explained():
    result = grade("00.gaussian_kl", lambda *a: gaussian_kl(*a).sum())
    assert result.points == 0
    assert "should have shape (5,), got ()" in str(result)


def test_kl_in_the_wrong_direction_loses_the_value_points():
    result = grade("00.gaussian_kl", lambda mq, lq, mp, lp: gaussian_kl(mp, lp, mq, lq))
    failed = {d["kind"] for d in result.details if not d["passed"]}
    assert "value" in failed and "shape" not in failed and result.status == "partial"


def test_sampler_with_variance_for_std_is_caught():
    result = grade("00.reparameterize", lambda m, lv, e: m + lv.exp() * e)
    assert result.points == 0 and "expected" in str(result)


def test_detached_sampler_fails_the_gradient_case():
    result = grade("00.reparameterize", lambda m, lv, e: reparameterize(m, lv, e).detach())
    failed = [d for d in result.details if not d["passed"]]
    assert [d["kind"] for d in failed] == ["gradient"]
    assert "gradient" in failed[0]["message"]


def test_population_std_is_caught_in_the_standard_error():
    result = grade("00.mc_estimate", lambda f, x: (f(x).mean(0), f(x).std(0, correction=0) / len(x) ** 0.5))
    assert result.status == "partial"


def test_a_crash_is_reported_not_raised():
    result = grade("00.mc_estimate", lambda f, x: 1 / 0)
    assert result.points == 0 and "ZeroDivisionError" in str(result)


def test_check_prints_records_and_is_strict_on_request(tmp_path, monkeypatch, capsys):
    grades = tmp_path / "grades.json"
    monkeypatch.setenv("COURSE_GRADE_FILE", str(grades))
    monkeypatch.setenv("COURSE_STRICT", "0")
    check("00.gaussian_kl", stub)
    assert "0/5 points" in capsys.readouterr().out
    check("00.mc_estimate", mc_estimate)
    record = json.loads(grades.read_text())
    assert record["00.gaussian_kl"]["points"] == 0 and record["00.mc_estimate"]["status"] == "passed"
    monkeypatch.setenv("COURSE_STRICT", "1")
    check("00.mc_estimate", mc_estimate)
    with pytest.raises(ExerciseFailed, match="00.gaussian_kl"):
        check("00.gaussian_kl", stub)


def test_unknown_exercise_and_non_callable_raise():
    with pytest.raises(ValueError, match="exercise_id"):
        grade("99.nothing", stub)
    with pytest.raises(TypeError, match="fn"):
        grade("00.gaussian_kl", 3.0)


def test_strip_solutions_keeps_indentation_and_rejects_unbalanced_markers():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n\nf(1)"
    assert strip_solutions(src) == "def f(x):\n    raise NotImplementedError  # your code here\n\nf(1)"
    with pytest.raises(ValueError, match="without"):
        strip_solutions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without"):
        strip_solutions("x = 1\n### END SOLUTION")


def _notebook(*cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nb


def test_make_learner_stubs_answers_and_clears_outputs():
    nb = _notebook("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION")
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1")]
    nb.cells[0].execution_count = 3
    nb.cells.append(nbformat.v4.new_markdown_cell(
        "[badge](https://colab/notebooks/solutions/00.ipynb)\n### BEGIN SOLUTION\nIt is 1.\n### END SOLUTION"))
    learner = make_learner(nb)
    assert "return 1" not in learner.cells[0].source and "NotImplementedError" in learner.cells[0].source
    assert learner.cells[0].outputs == [] and learner.cells[0].execution_count is None
    assert "It is 1" not in learner.cells[1].source and "notebooks/00.ipynb" in learner.cells[1].source
    assert nb.cells[0].outputs, "the solution notebook itself is left alone"


def test_committed_learner_notebooks_are_up_to_date():
    assert list((NOTEBOOKS / "solutions").glob("*.ipynb")), "no solution notebooks found"
    stale = sync_learner_notebooks(NOTEBOOKS, check_only=True)
    assert not stale, f"regenerate with `course-make-learner`: {stale}"
    assert make_learner_main(["--notebooks", str(NOTEBOOKS), "--check"]) == 0


def test_sync_writes_missing_learner_notebooks(tmp_path):
    (tmp_path / "solutions").mkdir()
    nbformat.write(_notebook("x = 1\n### BEGIN SOLUTION\ny = 2\n### END SOLUTION"),
                   tmp_path / "solutions" / "01_x.ipynb")
    assert make_learner_main(["--notebooks", str(tmp_path), "--check"]) == 1
    assert sync_learner_notebooks(tmp_path) == [tmp_path / "01_x.ipynb"]
    assert sync_learner_notebooks(tmp_path, check_only=True) == []


def test_grade_notebook_scores_a_submission(tmp_path):
    """Executes a real kernel: one right answer, one stub, one check never reached."""
    nb = _notebook(
        "from course_lib.grading import check\nfrom course_lib.gaussians import gaussian_kl",
        "check('00.gaussian_kl', gaussian_kl)",
        "def reparameterize(mu, logvar, eps):\n    raise NotImplementedError",
        "check('00.reparameterize', reparameterize)",
        "1 / 0",
        "check('00.mc_estimate', undefined_name)")
    path = tmp_path / "submission.ipynb"
    nbformat.write(nb, path)
    assert exercises_in(nb) == ["00.gaussian_kl", "00.reparameterize", "00.mc_estimate"]
    out = tmp_path / "score.json"
    assert grade_main([str(path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    ex = report["exercises"]
    assert ex["00.gaussian_kl"]["points"] == 5
    assert ex["00.reparameterize"]["status"] == "not attempted"
    assert ex["00.mc_estimate"]["status"] == "not run"
    assert (report["total"], report["max_total"]) == (5, 13)
